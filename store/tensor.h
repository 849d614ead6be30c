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

struct TensorInput {
  TensorSpec spec;
  TensorFiller fill;

  // A tensor whose bytes are already in memory. `bytes.size()` must equal the size the
  // spec implies (writers check and fail with InvalidArgument otherwise).
  static TensorInput FromBytes(TensorSpec spec, std::string bytes);
};

}  // namespace loadstar::store
