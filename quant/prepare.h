// One call per checkpoint tensor: what loading it under a QuantConfig produces, as the
// HF / bitsandbytes state-dict tensors (quant_state.h). This is the whole-tensor path used
// by `store export` and by artifact building; the loader's streaming path calls the chunk
// APIs (Quantize4bitChunk / QuantizeInt8RowsChunk) with the same order of operations:
//
//   1. ShouldQuantize(config, name, shape) picks the type.
//   2. Floating tensors are cast to config.torch_dtype first (RNE), as transformers does
//      before bitsandbytes sees the weight: a 4-bit state's "dtype" is torch_dtype and its
//      absmax is taken over torch_dtype values. (int8 then casts to fp16, as Int8Params.)
//   3. Quantize (optimized path) and serialize; non-quantized tensors come back cast.
//
// Thread-safety: pure function.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/policy.h"
#include "quant/quant_state.h"

namespace loadstar {
namespace quant {

struct PreparedTensor {
  QuantType type = QuantType::kNone;   // what was applied
  std::vector<NamedTensor> tensors;    // the state-dict entries it became
};

// `transpose_conv1d`: the tensor is a Conv1D weight (IsConv1DWeight); when it is quantized
// it is transposed to [out, in] first, as transformers does (not-quantized tensors keep
// the checkpoint layout).
absl::StatusOr<PreparedTensor> PrepareTensor(const QuantConfig& config, std::string_view name,
                                             DType dtype, const std::vector<int64_t>& shape,
                                             const void* data,
                                             const QuantizeOptions& options = {},
                                             bool transpose_conv1d = false);

// Transposes a row-major [rows, cols] matrix of `esize`-byte elements into `out`.
void Transpose2D(const void* in, int64_t rows, int64_t cols, size_t esize, void* out);

}  // namespace quant
}  // namespace loadstar
