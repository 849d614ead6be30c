// TensorQuantizer: the quantize-while-streaming contract, shared by the CPU
// StreamingQuantizer (quant/streaming.h) and the GPU one (kernels/gpu_streaming_quantizer.h)
// so the loader picks one per destination device without knowing which it got.
//
// Contract: the bytes of one tensor arrive in order through Append, in chunks of any size
// (the caller may reuse its buffer once Append returns); after the last byte, the Finish
// call for the type returns the whole tensor's quantization, bit-identical to
// quant::PrepareTensor on the whole tensor whichever implementation ran it.
//
// Thread safety: not thread-safe; one instance per tensor, one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "quant/blockwise.h"
#include "quant/int8.h"

namespace loadstar::quant {

class TensorQuantizer {
 public:
  virtual ~TensorQuantizer() = default;

  // Consumes the next `size` bytes of the tensor. InvalidArgument past the tensor's end.
  virtual absl::Status Append(const void* data, size_t size) = 0;
  virtual int64_t bytes_expected() const = 0;
  virtual int64_t bytes_consumed() const = 0;

  // After every byte was appended (else FailedPrecondition). Call the one for the type.
  virtual absl::StatusOr<Quantized4bit> Finish4bit() = 0;
  virtual absl::StatusOr<QuantizedInt8> FinishInt8() = 0;
};

}  // namespace loadstar::quant
