#include "kernels/quantized_linear_gpu.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_status.h"
#include "kernels/gpu_quantizer.h"
#include "kernels/linear_kernels.h"
#include "kernels/quantize_kernels.h"

namespace loadstar::kernels {
namespace {

// cudaMalloc'd array of T freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  ~DeviceArray() {
    if (ptr_ != nullptr) CUDA_IGNORE_ERROR(cudaFree(ptr_));
  }
  absl::Status Allocate(int64_t count) {
    CUDA_RETURN_IF_ERROR(
        cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<int64_t>(1, count) * sizeof(T)));
    return absl::OkStatus();
  }
  absl::Status Upload(const T* src, int64_t count, cudaStream_t stream) {
    RETURN_IF_ERROR(Allocate(count));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ptr_, src, count * sizeof(T), cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

// Downloads an fp16 device matrix as float values.
absl::StatusOr<std::vector<float>> DownloadHalf(const Half* d, int64_t count,
                                                cudaStream_t stream) {
  std::vector<Half> h(count);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(h.data(), d, count * sizeof(Half), cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  std::vector<float> out(count);
  for (int64_t i = 0; i < count; ++i) out[i] = ToFloat(h[i]);
  return out;
}

// Row-major Y[m, n] = X[m, k] W[n, k]^T + beta * Y in column-major terms is
// Y^T[n, m] = op_T(W as col-major [k, n]) * X as col-major [k, m]: the "TN" layout.
absl::Status HalfGemm(cublasHandle_t handle, const Half* x, const Half* w, int64_t m,
                      int64_t k, int64_t n, float beta, Half* y) {
  const float alpha = 1.0f;
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                      static_cast<int>(m), static_cast<int>(k), &alpha, w,
                                      CUDA_R_16F, static_cast<int>(k), x, CUDA_R_16F,
                                      static_cast<int>(k), &beta, y, CUDA_R_16F,
                                      static_cast<int>(n), CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace

struct QuantizedLinearGpu::Handles {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
};

absl::StatusOr<std::unique_ptr<QuantizedLinearGpu>> QuantizedLinearGpu::Create(int ordinal) {
  auto quantizer = GpuQuantizer::Create(ordinal);
  if (!quantizer.ok()) return quantizer.status();
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  auto handles = std::make_unique<Handles>();
  // The object owns the handles from here on, so early returns release them.
  std::unique_ptr<QuantizedLinearGpu> layer(
      new QuantizedLinearGpu(ordinal, std::move(handles), std::move(quantizer).value()));
  absl::MutexLock lock(&layer->mu_);
  Handles& h = *layer->handles_;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&h.stream, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&h.blas));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(h.blas, h.stream));
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&h.lt));
  return layer;
}

QuantizedLinearGpu::QuantizedLinearGpu(int ordinal, std::unique_ptr<Handles> handles,
                                       std::unique_ptr<GpuQuantizer> quantizer)
    : ordinal_(ordinal), handles_(std::move(handles)), quantizer_(std::move(quantizer)) {}

QuantizedLinearGpu::~QuantizedLinearGpu() {
  absl::MutexLock lock(&mu_);
  CUDA_IGNORE_ERROR(cudaSetDevice(ordinal_));
  if (handles_->lt != nullptr) static_cast<void>(cublasLtDestroy(handles_->lt));
  if (handles_->blas != nullptr) static_cast<void>(cublasDestroy(handles_->blas));
  if (handles_->stream != nullptr) CUDA_IGNORE_ERROR(cudaStreamDestroy(handles_->stream));
}

absl::Status QuantizedLinearGpu::CanImplementInt8(int64_t m, int64_t k, int64_t n) {
  if (m < 1 || k < 1 || n < 1) {
    return absl::InvalidArgumentError(fmt::format("empty GEMM [{}, {}] x [{}, {}]^T", m, k, n, k));
  }
  if (k % 4 != 0 || n % 4 != 0) {
    return absl::UnimplementedError(fmt::format(
        "cuBLASLt int8 GEMM needs k and n multiples of 4, got k={} n={}", k, n));
  }
  if (m > INT32_MAX || k > INT32_MAX || n > INT32_MAX) {
    return absl::UnimplementedError("GEMM dimensions beyond int32");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> QuantizedLinearGpu::Int8Linear(const Half* x, int64_t m,
                                                                  int64_t k,
                                                                  const quant::QuantizedInt8& w,
                                                                  float threshold) {
  if (w.shape.size() != 2 || w.cols() != k ||
      static_cast<int64_t>(w.weight.size()) != w.rows() * k ||
      static_cast<int64_t>(w.scb.size()) != w.rows()) {
    return absl::InvalidArgumentError(fmt::format("int8 weight must be [n, {}] with n SCB", k));
  }
  if (x == nullptr || !(threshold >= 0.0f)) {
    return absl::InvalidArgumentError("null activations or negative threshold");
  }
  const int64_t n = w.rows();
  RETURN_IF_ERROR(CanImplementInt8(m, k, n));
  absl::MutexLock lock(&mu_);
  const Handles& h = *handles_;
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  DeviceArray<Half> d_x, d_y, d_x_out, d_w_out;
  DeviceArray<int8_t> d_xq, d_wq;
  DeviceArray<float> d_row, d_scb;
  DeviceArray<int32_t> d_acc, d_flags;
  RETURN_IF_ERROR(d_x.Upload(x, m * k, h.stream));
  RETURN_IF_ERROR(d_wq.Upload(w.weight.data(), n * k, h.stream));
  RETURN_IF_ERROR(d_scb.Upload(w.scb.data(), n, h.stream));
  RETURN_IF_ERROR(d_xq.Allocate(m * k));
  RETURN_IF_ERROR(d_row.Allocate(m));
  RETURN_IF_ERROR(d_acc.Allocate(m * n));
  RETURN_IF_ERROR(d_y.Allocate(m * n));
  RETURN_IF_ERROR(d_flags.Allocate(k));
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d_flags.get(), 0, k * sizeof(int32_t), h.stream));

  // 1. Row-wise int8 activations; outliers excluded from the scales and zeroed.
  CUDA_RETURN_IF_ERROR(LaunchQuantizeInt8Rows(GpuElement::kF16, d_x.get(), m, k, threshold,
                                              d_xq.get(), d_row.get(), h.stream));
  if (threshold > 0.0f) {
    CUDA_RETURN_IF_ERROR(
        LaunchMarkOutlierColumns(d_x.get(), m, k, threshold, d_flags.get(), h.stream));
    CUDA_RETURN_IF_ERROR(LaunchZeroFlaggedColumns(d_xq.get(), m, k, d_flags.get(), h.stream));
  }

  // 2. int32 acc = Xq Wq^T (cuBLASLt, TN, column-major view: acc^T[n, m]).
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  auto run_lt = [&]() -> absl::Status {
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32I, CUDA_R_32I));
    const cublasOperation_t transa = CUBLAS_OP_T;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                          &transa, sizeof(transa)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&a, CUDA_R_8I, k, n, k));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&b, CUDA_R_8I, k, m, k));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&c, CUDA_R_32I, n, m, n));
    const int32_t alpha = 1, beta = 0;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(h.lt, desc, &alpha, d_wq.get(), a, d_xq.get(), b,
                                          &beta, d_acc.get(), c, d_acc.get(), c,
                                          /*algo=*/nullptr, /*workspace=*/nullptr, 0, h.stream));
    return absl::OkStatus();
  };
  const absl::Status lt_status = run_lt();
  if (c != nullptr) static_cast<void>(cublasLtMatrixLayoutDestroy(c));
  if (b != nullptr) static_cast<void>(cublasLtMatrixLayoutDestroy(b));
  if (a != nullptr) static_cast<void>(cublasLtMatrixLayoutDestroy(a));
  if (desc != nullptr) static_cast<void>(cublasLtMatmulDescDestroy(desc));
  RETURN_IF_ERROR(lt_status);

  // 3. y = fp16(acc / 127² * row * col).
  CUDA_RETURN_IF_ERROR(LaunchInt8MatmulDequant(d_acc.get(), d_row.get(), d_scb.get(), m, n,
                                               d_y.get(), h.stream));

  // 4. y += X_outliers (fp16) * dequantized W_outliers^T, fp32 compute, beta = 1.
  if (threshold > 0.0f) {
    RETURN_IF_ERROR(d_x_out.Allocate(m * k));
    RETURN_IF_ERROR(d_w_out.Allocate(n * k));
    CUDA_RETURN_IF_ERROR(LaunchOutlierOperands(d_x.get(), m, k, d_wq.get(), d_scb.get(), n,
                                               d_flags.get(), d_x_out.get(), d_w_out.get(),
                                               h.stream));
    RETURN_IF_ERROR(HalfGemm(h.blas, d_x_out.get(), d_w_out.get(), m, k, n, 1.0f, d_y.get()));
  }
  return DownloadHalf(d_y.get(), m * n, h.stream);
}

absl::StatusOr<std::vector<float>> QuantizedLinearGpu::Fp4Linear(const Half* x, int64_t m,
                                                                 int64_t k,
                                                                 const quant::Quantized4bit& w) {
  if (w.shape.size() != 2 || w.shape[1] != k || w.shape[0] < 1) {
    return absl::InvalidArgumentError(fmt::format("4-bit weight must be [n, {}]", k));
  }
  if (x == nullptr || m < 1 || k < 1) return absl::InvalidArgumentError("empty activations");
  const int64_t n = w.shape[0];
  const std::vector<float> absmax = w.Absmax();
  absl::MutexLock lock(&mu_);
  const Handles& h = *handles_;
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  DeviceArray<Half> d_x, d_w, d_y;
  DeviceArray<uint8_t> d_packed;
  DeviceArray<float> d_absmax;
  RETURN_IF_ERROR(d_x.Upload(x, m * k, h.stream));
  RETURN_IF_ERROR(d_packed.Upload(w.packed.data(), static_cast<int64_t>(w.packed.size()),
                                  h.stream));
  RETURN_IF_ERROR(d_absmax.Upload(absmax.data(), static_cast<int64_t>(absmax.size()), h.stream));
  RETURN_IF_ERROR(d_w.Allocate(n * k));
  RETURN_IF_ERROR(d_y.Allocate(m * n));
  RETURN_IF_ERROR(quantizer_->Dequantize4bitDevice(w.spec, d_packed.get(), d_absmax.get(), n * k,
                                                   DType::kF16, d_w.get(), h.stream));
  RETURN_IF_ERROR(HalfGemm(h.blas, d_x.get(), d_w.get(), m, k, n, 0.0f, d_y.get()));
  return DownloadHalf(d_y.get(), m * n, h.stream);
}

}  // namespace loadstar::kernels
