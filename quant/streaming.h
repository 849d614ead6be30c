// StreamingQuantizer: quantize-while-streaming for the loader. Bytes of one tensor arrive
// in order in chunks of any size; every complete unit (a 4-bit block, or an int8 row) is
// quantized as soon as its bytes are in, with at most one unit buffered in between, and
// Finish() quantizes the tail and (for double quant) nests the absmax.
//
// HF parity: transformers casts a weight to torch_dtype before bitsandbytes quantizes it;
// pass that dtype as `quantize_dtype` and each unit is cast (RNE) before quantizing.
// The result is bit-identical to PrepareTensor / Quantize4bit / QuantizeInt8 on the whole
// tensor (tests/quant/streaming_test.cc).
//
// The CPU TensorQuantizer (quant/tensor_quantizer.h).
//
// Thread-safety: not thread-safe; one instance per tensor, used by one thread at a time.
// Append may use `options.threads` workers internally for large chunks.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "quant/blockwise.h"
#include "quant/int8.h"
#include "quant/tensor_quantizer.h"

namespace loadstar {
namespace quant {

class StreamingQuantizer final : public TensorQuantizer {
 public:
  struct Options {
    QuantType type = QuantType::kNf4;       // kNf4 | kFp4 | kInt8
    Fp4Spec spec;                           // 4-bit only (spec.type is overwritten by type)
    DType in_dtype = DType::kF16;           // dtype of the arriving bytes
    DType quantize_dtype = DType::kF16;     // torch_dtype: values are cast to it first
    std::vector<int64_t> shape;             // tensor shape (int8: 2-D)
    QuantizeOptions threads;                // worker threads for large chunks
    bool transpose_conv1d = false;          // Conv1D weight (IsConv1DWeight): [in, out] in,
                                            // quantized as [out, in]; buffers the whole
                                            // tensor (a transposed block spans all rows)
  };

  static absl::StatusOr<std::unique_ptr<StreamingQuantizer>> Create(Options options);

  // Consumes the next `size` bytes of the tensor. InvalidArgument past the tensor's end.
  absl::Status Append(const void* data, size_t size) override;

  int64_t bytes_expected() const override { return total_bytes_; }
  int64_t bytes_consumed() const override { return consumed_; }

  // After every byte was appended (else FailedPrecondition). Call the one for the type.
  absl::StatusOr<Quantized4bit> Finish4bit() override;
  absl::StatusOr<QuantizedInt8> FinishInt8() override;

 private:
  explicit StreamingQuantizer(Options options);
  // Quantizes `units` whole units starting at unit index next_unit_ from `data`.
  absl::Status ProcessUnits(const uint8_t* data, int64_t units, int64_t elements);

  Options opt_;
  int64_t total_elements_ = 0;
  int64_t total_bytes_ = 0;
  int64_t consumed_ = 0;
  int64_t unit_elements_ = 0;         // blocksize, or cols for int8
  int64_t next_element_ = 0;          // first element not yet quantized
  std::vector<uint8_t> pending_;      // bytes of an incomplete unit
  std::vector<uint8_t> cast_buffer_;  // scratch for the torch_dtype cast
  std::vector<uint8_t> whole_;        // transpose_conv1d: the whole input tensor
  // Outputs.
  std::vector<uint8_t> packed_;
  std::vector<float> absmax_;
  std::vector<int8_t> weight_;
  std::vector<float> scb_;
};

}  // namespace quant
}  // namespace loadstar
