// LLM.int8 weight quantization (bitsandbytes Int8Params / int8_vectorwise_quant with
// threshold 0): the 2-D weight is cast to fp16, then per row
//   SCB[r] = max |w[r, :]|            (fp32 of an fp16 value)
//   q[r,c] = round-half-even(float(w[r,c]) * (127.0f / SCB[r]))   -> int8
// An all-zero row gives 0 * inf = NaN -> 0 (as __float2int_rn). Dequantized weight:
// (q * SCB) * 7.874015718698502e-3f in fp32, as int8_vectorwise_dequant.
//
// Bit-exactness: this matches bitsandbytes' CPU/default path exactly (correctly rounded
// 127/SCB). The CUDA kernel (kInt8VectorQuant) computes the scale with __fdividef, which
// may be off by up to 2 ulp; a code can then differ by one where x*scale lies within a
// few ulp of a .5 tie (rare; tests/data/bnb_golden covers the CPU semantics).
//
// Rows are independent: QuantizeInt8RowsChunk quantizes a row range (streaming).
// Thread-safety: all functions are thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "quant/blockwise.h"

namespace loadstar {
namespace quant {

struct QuantizedInt8 {
  std::vector<int64_t> shape;      // [rows, cols] of the original weight
  DType dtype = DType::kF16;       // dtype of the original weight
  std::vector<int8_t> weight;      // rows * cols, row-major
  std::vector<float> scb;          // one per row: max |row| after the fp16 cast

  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 0 : shape[1]; }
};

// InvalidArgument unless shape is 2-D, non-empty, and dtype is F32/F16/BF16.
absl::Status ValidateInt8(DType in_dtype, const std::vector<int64_t>& shape);

// Scalar reference.
absl::StatusOr<QuantizedInt8> QuantizeInt8Ref(DType in_dtype, const void* data,
                                              const std::vector<int64_t>& shape);

// Optimized (SIMD + threads); same bits as QuantizeInt8Ref.
absl::StatusOr<QuantizedInt8> QuantizeInt8(DType in_dtype, const void* data,
                                           const std::vector<int64_t>& shape,
                                           const QuantizeOptions& options = {});

// Quantizes rows [row_offset, row_offset + row_count) read from `rows_data` (row_count *
// cols elements) into whole-tensor outputs weight[rows * cols] and scb[rows].
absl::Status QuantizeInt8RowsChunk(DType in_dtype, const void* rows_data, int64_t row_offset,
                                   int64_t row_count, int64_t cols, int8_t* weight,
                                   float* scb, const QuantizeOptions& options = {});

// Dequantized weight in out_dtype (F32/F16/BF16): T((q * SCB) * (1/127)).
absl::Status DequantizeInt8(const QuantizedInt8& q, DType out_dtype, void* out);

}  // namespace quant
}  // namespace loadstar
