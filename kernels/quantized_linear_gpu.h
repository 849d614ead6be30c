// Quantized linear layers on a GPU, for validating quantized weights where they will run
// (the CPU twins, with the exact semantics, are quant/quantized_linear.h):
//  - Int8Linear: LLM.int8 as bitsandbytes does it: activations quantized row-wise with
//    outliers (|x| >= threshold) split out, int8 x int8 -> int32 GEMM with cuBLASLt,
//    dequantized by row x column scales / 127², plus the outlier columns as an fp16 GEMM
//    (cuBLAS, fp32 compute) against the dequantized weight columns, added with beta = 1.
//    The outlier GEMM runs over all k columns with the others zeroed (exactly the same
//    sum; simpler than gathering, and this layer validates, it does not serve).
//  - Fp4Linear: the 4-bit weight dequantized to fp16 by the GpuQuantizer kernels, then
//    cuBLAS GemmEx (fp16 in and out, fp32 compute).
// Outputs are returned as float (fp16 values). The int8 GEMM and the dequant are exact,
// so Int8Linear without outliers equals the CPU twin bit for bit; fp16 GEMMs differ from
// the CPU's summation order by a few fp16 ulps.
//
// Operator split as CUTLASS does it: CanImplement says whether the shapes fit cuBLASLt's
// int8 kernels (k and n multiples of 4); Create initializes handles; the calls run.
//
// Thread safety: calls are serialized by a mutex (cuBLAS handles are not shareable
// across concurrent calls on different streams).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "quant/blockwise.h"
#include "quant/float16.h"
#include "quant/int8.h"
#include "quant/quantized_linear.h"

namespace loadstar::kernels {

class GpuQuantizer;

class QuantizedLinearGpu {
 public:
  // FailedPrecondition "no usable GPU: ..." without a GPU.
  static absl::StatusOr<std::unique_ptr<QuantizedLinearGpu>> Create(int ordinal = 0);
  ~QuantizedLinearGpu();

  // OK when cuBLASLt's int8 GEMM takes [m, k] x [n, k]^T; else Unimplemented.
  static absl::Status CanImplementInt8(int64_t m, int64_t k, int64_t n);

  // x is host memory [m, k]; w.shape == {n, k}. Synchronous.
  absl::StatusOr<std::vector<float>> Int8Linear(const Half* x, int64_t m, int64_t k,
                                                const quant::QuantizedInt8& w,
                                                float threshold = quant::kDefaultInt8Threshold);
  absl::StatusOr<std::vector<float>> Fp4Linear(const Half* x, int64_t m, int64_t k,
                                               const quant::Quantized4bit& w);

 private:
  struct Handles;
  QuantizedLinearGpu(int ordinal, std::unique_ptr<Handles> handles,
                     std::unique_ptr<GpuQuantizer> quantizer);

  const int ordinal_;
  absl::Mutex mu_;
  std::unique_ptr<Handles> handles_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<GpuQuantizer> quantizer_;
};

}  // namespace loadstar::kernels
