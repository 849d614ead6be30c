#include "store/tensor.h"

#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace loadstar::store {

std::optional<uint64_t> TensorByteSize(DType dtype, const std::vector<int64_t>& shape) {
  uint64_t size = DTypeSize(dtype);
  for (int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    if (__builtin_mul_overflow(size, static_cast<uint64_t>(dim), &size)) return std::nullopt;
  }
  return size;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

TensorInput TensorInput::FromBytes(TensorSpec spec, std::string bytes) {
  auto data = std::make_shared<const std::string>(std::move(bytes));
  TensorInput input;
  input.spec = std::move(spec);
  input.fill = [data](uint64_t offset, char* dst, size_t n) -> absl::Status {
    if (offset > data->size() || n > data->size() - offset) {
      return absl::InvalidArgumentError(fmt::format(
          "in-memory tensor has {} bytes; asked for {} at offset {}", data->size(), n, offset));
    }
    std::memcpy(dst, data->data() + offset, n);
    return absl::OkStatus();
  };
  return input;
}

}  // namespace loadstar::store
