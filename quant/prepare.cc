#include "quant/prepare.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <fmt/format.h>

namespace loadstar {
namespace quant {

void Transpose2D(const void* in, int64_t rows, int64_t cols, size_t esize, void* out) {
  const uint8_t* src = static_cast<const uint8_t*>(in);
  uint8_t* dst = static_cast<uint8_t*>(out);
  constexpr int64_t kTile = 32;  // cache-friendly tiles
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) {
          std::memcpy(dst + (c * rows + r) * esize, src + (r * cols + c) * esize, esize);
        }
      }
    }
  }
}

absl::StatusOr<PreparedTensor> PrepareTensor(const QuantConfig& config, std::string_view name,
                                             DType dtype, const std::vector<int64_t>& shape_in,
                                             const void* data_in, const QuantizeOptions& options,
                                             bool transpose_conv1d) {
  std::vector<int64_t> shape = shape_in;
  const void* data = data_in;
  std::vector<uint8_t> transposed;
  if (transpose_conv1d && shape.size() == 2 &&
      ShouldQuantize(config, name, shape) != QuantType::kNone) {
    transposed.resize(static_cast<size_t>(shape[0] * shape[1]) * DTypeSize(dtype));
    Transpose2D(data_in, shape[0], shape[1], DTypeSize(dtype), transposed.data());
    shape = {shape_in[1], shape_in[0]};
    data = transposed.data();
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  PreparedTensor out;
  out.type = ShouldQuantize(config, name, shape);
  const bool floating = dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
  if (out.type != QuantType::kNone && !floating) out.type = QuantType::kNone;

  // Step 2: the torch_dtype cast (also the whole answer for non-quantized tensors).
  std::vector<uint8_t> cast;
  const void* values = data;
  DType values_dtype = dtype;
  if (floating && dtype != config.torch_dtype) {
    cast.resize(static_cast<size_t>(n) * DTypeSize(config.torch_dtype));
    if (absl::Status s = CastFloatTensor(dtype, data, n, config.torch_dtype, cast.data());
        !s.ok()) {
      return s;
    }
    values = cast.data();
    values_dtype = config.torch_dtype;
  }

  switch (out.type) {
    case QuantType::kNone: {
      NamedTensor t{std::string(name), values_dtype, shape, {}};
      if (!cast.empty()) {
        t.data = std::move(cast);
      } else {
        t.data.resize(static_cast<size_t>(n) * DTypeSize(dtype));
        if (n) std::memcpy(t.data.data(), data, t.data.size());
      }
      out.tensors.push_back(std::move(t));
      return out;
    }
    case QuantType::kNf4:
    case QuantType::kFp4: {
      auto q = Quantize4bit(config.fp4_spec(), values_dtype, values, shape, options);
      if (!q.ok()) {
        return absl::Status(q.status().code(),
                            fmt::format("{}: {}", name, std::string(q.status().message())));
      }
      out.tensors = Serialize4bit(name, *q);
      return out;
    }
    case QuantType::kInt8: {
      auto q = QuantizeInt8(values_dtype, values, shape, options);
      if (!q.ok()) {
        return absl::Status(q.status().code(),
                            fmt::format("{}: {}", name, std::string(q.status().message())));
      }
      out.tensors = SerializeInt8(name, *q);
      return out;
    }
  }
  return absl::InternalError("unreachable");
}

}  // namespace quant
}  // namespace loadstar
