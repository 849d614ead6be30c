// Quantized linear layers on the CPU: the twins of the GPU validation layers in
// kernels/quantized_linear_gpu.h, and what the worker's Probe RPC runs to tell how far a
// quantized deployment's outputs are from the unquantized model's.
//
// All matrices are row-major. Activations x are [m, k] fp16; a weight is [n, k] (torch's
// Linear layout); outputs are y = x W^T, [m, n], returned as float holding the values the
// GPU layer produces (fp16-rounded where bitsandbytes rounds to fp16). No bias: the
// quantized weight is what these measure.
//
//  - LinearReference: fp32 products and sums of the unquantized weight, no rounding of y.
//  - Int8Linear: LLM.int8 as bitsandbytes' MatMul8bitLt does it (inference, int8 weights):
//      1. activations quantized row-wise (QuantizeActivationsInt8): elements with
//         |x| >= threshold are outliers; row scale = max |x| over the others; q = RNE(x *
//         127/scale); every column holding an outlier ("outlier column") is zeroed in q;
//      2. y0 = fp16(((float(q_x · q_w) * (1/127²)) * row_scale) * SCB)   (int32 GEMM);
//      3. y  = fp16(y0 + Σ_{outlier cols j} x[:, j] * fp16(dequant(W[:, j])))  (fp32 sum).
//    threshold 0 disables the outlier path.
//  - Fp4Linear: the 4-bit weight dequantized to fp16 (quant::Dequantize4bit), then an fp32-
//    accumulated GEMM rounded once to fp16 (cuBLAS GemmEx with fp32 compute).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "quant/blockwise.h"
#include "quant/float16.h"
#include "quant/int8.h"

namespace loadstar {
namespace quant {

// bitsandbytes' llm_int8_threshold default.
inline constexpr float kDefaultInt8Threshold = 6.0f;
// 1 / 127², the int32 -> float dequant constant of bitsandbytes' int8_mm_dequant.
inline constexpr float kInt8MatmulDequant = 6.200012e-5f;

// Row-wise int8 activations with outliers split out (step 1 above).
struct Int8Activations {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> q;               // rows * cols, outlier columns zeroed
  std::vector<float> row_scale;        // max |x| per row over non-outliers (0 if none)
  std::vector<int64_t> outlier_cols;   // ascending
};

// InvalidArgument for m, k < 1, threshold < 0 or a null x.
absl::StatusOr<Int8Activations> QuantizeActivationsInt8(const Half* x, int64_t m, int64_t k,
                                                        float threshold);

// y = x W^T in fp32 with `w` of w_dtype (F32/F16/BF16), shape [n, k].
absl::StatusOr<std::vector<float>> LinearReference(const Half* x, int64_t m, int64_t k,
                                                   DType w_dtype, const void* w, int64_t n);

// LLM.int8 layer; w.shape == {n, k}.
absl::StatusOr<std::vector<float>> Int8Linear(const Half* x, int64_t m, int64_t k,
                                              const QuantizedInt8& w,
                                              float threshold = kDefaultInt8Threshold);

// 4-bit layer; w.shape == {n, k}.
absl::StatusOr<std::vector<float>> Fp4Linear(const Half* x, int64_t m, int64_t k,
                                             const Quantized4bit& w);

// How far an output is from the reference.
struct LinearError {
  double max_abs = 0;        // max |y - ref|
  double max_rel = 0;        // max_abs / max |ref| (0 when ref is all zero and y == ref)
  double relative_l2 = 0;    // ||y - ref||_2 / ||ref||_2
  int64_t count = 0;         // elements compared
};

// InvalidArgument when the sizes differ. NaN anywhere gives +inf errors.
absl::StatusOr<LinearError> CompareToReference(const std::vector<float>& y,
                                               const std::vector<float>& ref);

}  // namespace quant
}  // namespace loadstar
