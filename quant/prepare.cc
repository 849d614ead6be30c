#include "quant/prepare.h"

#include <cstring>
#include <string>

#include <fmt/format.h>

namespace loadstar {
namespace quant {

absl::StatusOr<PreparedTensor> PrepareTensor(const QuantConfig& config, std::string_view name,
                                             DType dtype, const std::vector<int64_t>& shape,
                                             const void* data, const QuantizeOptions& options) {
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
