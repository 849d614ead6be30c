#include "quant/int8.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "quant/blockwise_math.h"
#include "quant/cpu_kernels.h"

namespace loadstar {
namespace quant {
namespace {

// The fp16 value of element i (the weight is cast to fp16 first; RNE from F32).
Half LoadAsHalf(DType dtype, const void* data, int64_t i) {
  switch (dtype) {
    case DType::kF16:
      return static_cast<const Half*>(data)[i];
    case DType::kBF16:
      return FromFloat<Half>(ToFloat(static_cast<const BFloat16*>(data)[i]));
    default:
      return FromFloat<Half>(static_cast<const float*>(data)[i]);
  }
}

void RefRow(const Half* row, int64_t cols, int8_t* out, float* scb) {
  const float absmax = fmaxf(0.0f, BlockAbsmax(row, cols));
  *scb = absmax;
  const float scale = Int8RowScale(absmax);
  for (int64_t c = 0; c < cols; ++c) out[c] = Int8Quantize(ToFloat(row[c]), scale);
}

template <typename Store>
absl::Status ForEachDequantized(const QuantizedInt8& q, Store store) {
  const int64_t rows = q.rows(), cols = q.cols();
  if (static_cast<int64_t>(q.weight.size()) != rows * cols ||
      static_cast<int64_t>(q.scb.size()) != rows) {
    return absl::InvalidArgumentError("int8 weight/SCB sizes do not match the shape");
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      store(r * cols + c, Int8Dequantize(q.weight[r * cols + c], q.scb[r]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateInt8(DType in_dtype, const std::vector<int64_t>& shape) {
  if (shape.size() != 2) {
    return absl::InvalidArgumentError(fmt::format(
        "int8 quantization needs a 2-D weight, got {} dimension(s)", shape.size()));
  }
  if (shape[0] <= 0 || shape[1] <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("int8 quantization needs a non-empty weight, got [{}, {}]", shape[0],
                    shape[1]));
  }
  if (in_dtype != DType::kF32 && in_dtype != DType::kF16 && in_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(fmt::format(
        "int8 quantization needs F32, F16 or BF16 input, got {}", DTypeName(in_dtype)));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizedInt8> QuantizeInt8Ref(DType in_dtype, const void* data,
                                              const std::vector<int64_t>& shape) {
  if (absl::Status s = ValidateInt8(in_dtype, shape); !s.ok()) return s;
  QuantizedInt8 q;
  q.shape = shape;
  q.dtype = in_dtype;
  const int64_t rows = shape[0], cols = shape[1];
  q.weight.resize(static_cast<size_t>(rows * cols));
  q.scb.resize(static_cast<size_t>(rows));
  std::vector<Half> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) row[c] = LoadAsHalf(in_dtype, data, r * cols + c);
    RefRow(row.data(), cols, q.weight.data() + r * cols, &q.scb[r]);
  }
  return q;
}

absl::Status QuantizeInt8RowsChunk(DType in_dtype, const void* rows_data, int64_t row_offset,
                                   int64_t row_count, int64_t cols, int8_t* weight,
                                   float* scb, const QuantizeOptions& options) {
  if (absl::Status s = ValidateInt8(in_dtype, {std::max<int64_t>(row_count, 1), cols});
      !s.ok()) {
    return s;
  }
  const internal::CpuKernels& k = internal::BestKernels();
  const int threads = row_count * cols < (int64_t{1} << 18) ? 1 : options.threads;
  internal::ParallelFor(row_count, 1, threads, [&](int64_t r0, int64_t r1) {
    std::vector<Half> converted;
    if (in_dtype != DType::kF16) converted.resize(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const Half* row;
      if (in_dtype == DType::kF16) {
        row = static_cast<const Half*>(rows_data) + r * cols;
      } else {
        for (int64_t c = 0; c < cols; ++c) converted[c] = LoadAsHalf(in_dtype, rows_data, r * cols + c);
        row = converted.data();
      }
      int8_t* out = weight + (row_offset + r) * cols;
      float* s = scb + row_offset + r;
      const float absmax = fmaxf(0.0f, k.half_row_absmax(row, cols));
      if (absmax == 0.0f || !std::isfinite(absmax)) {
        RefRow(row, cols, out, s);  // NaN / inf corner cases: the scalar definition
      } else {
        *s = absmax;
        k.int8_row(row, cols, Int8RowScale(absmax), out);
      }
    }
  });
  return absl::OkStatus();
}

absl::StatusOr<QuantizedInt8> QuantizeInt8(DType in_dtype, const void* data,
                                           const std::vector<int64_t>& shape,
                                           const QuantizeOptions& options) {
  if (absl::Status s = ValidateInt8(in_dtype, shape); !s.ok()) return s;
  QuantizedInt8 q;
  q.shape = shape;
  q.dtype = in_dtype;
  q.weight.resize(static_cast<size_t>(shape[0] * shape[1]));
  q.scb.resize(static_cast<size_t>(shape[0]));
  if (absl::Status s = QuantizeInt8RowsChunk(in_dtype, data, 0, shape[0], shape[1],
                                             q.weight.data(), q.scb.data(), options);
      !s.ok()) {
    return s;
  }
  return q;
}

absl::Status DequantizeInt8(const QuantizedInt8& q, DType out_dtype, void* out) {
  switch (out_dtype) {
    case DType::kF16:
      return ForEachDequantized(
          q, [&](int64_t i, float v) { static_cast<Half*>(out)[i] = FromFloat<Half>(v); });
    case DType::kBF16:
      return ForEachDequantized(q, [&](int64_t i, float v) {
        static_cast<BFloat16*>(out)[i] = FromFloat<BFloat16>(v);
      });
    case DType::kF32:
      return ForEachDequantized(q, [&](int64_t i, float v) { static_cast<float*>(out)[i] = v; });
    default:
      return absl::InvalidArgumentError(fmt::format(
          "int8 dequantize needs an F32, F16 or BF16 output, got {}", DTypeName(out_dtype)));
  }
}

}  // namespace quant
}  // namespace loadstar
