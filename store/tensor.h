// A tensor to be written (by the store, the variant writer or the safetensors writer):
// its name, dtype and shape, and a callback that produces its bytes piece by piece, so a
// producer (a quantizer, a copy from another file) never needs the whole tensor in memory.
//
// Thread safety: plain values; a TensorInput's `fill` is called from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"

namespace loadstar::store {

// product(shape) * DTypeSize(dtype); nullopt when a dimension is negative or the product
// overflows uint64.
std::optional<uint64_t> TensorByteSize(DType dtype, const std::vector<int64_t>& shape);

// "[2, 3]" for messages.
std::string ShapeToString(const std::vector<int64_t>& shape);

struct TensorSpec {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;  // empty for a scalar
};

// Writes bytes [offset, offset + n) of the tensor into dst. Writers call it with
// increasing, contiguous offsets covering [0, size) exactly once, in pieces of at most a
// few tens of MiB. Return an error to abort the write (it is passed through unchanged).
using TensorFiller = std::function<absl::Status(uint64_t offset, char* dst, size_t n)>;

// The final shape of a tensor known only once the writer reaches it (see TensorInput).
using ShapeAtWrite = std::function<absl::StatusOr<std::vector<int64_t>>()>;

struct TensorInput {
  TensorSpec spec;
  TensorFiller fill;
  // Optional, for a tensor whose size is known only after the tensors before it were
  // produced (a double-quant quant_state JSON prints the mean of the absmax written just
  // before it): WriteModelDir calls it when it reaches the tensor, after every earlier
  // tensor's last fill, and uses the shape it returns instead of spec.shape. Writers that
  // need every size up front (a safetensors header) refuse inputs that set it.
  ShapeAtWrite shape_at_write;

  // A tensor whose bytes are already in memory. `bytes.size()` must equal the size the
  // spec implies (writers check and fail with InvalidArgument otherwise).
  static TensorInput FromBytes(TensorSpec spec, std::string bytes);
};

}  // namespace loadstar::store
