// GpuStreamingQuantizer: the GPU quant::TensorQuantizer (quant/tensor_quantizer.h), twin
// of quant::StreamingQuantizer (quant/streaming.h) with the quantization on a GPU. Same
// Options (but transpose_conv1d, refused: the CPU path handles Conv1D weights), same
// Append/Finish contract and the same result bits: bytes of one tensor arrive in order in
// chunks of any size (host memory, e.g. a pinned ring slot); every complete unit (a 4-bit block, an int8 row) is uploaded, cast
// to quantize_dtype when it differs from in_dtype, and quantized by the GpuQuantizer
// kernels into whole-tensor outputs that stay on the GPU (device_packed() & co.), so a
// CUDA device can keep them without a round trip. At most one unit waits on the host.
//
// Append returns once the chunk's bytes have been copied out of the caller's buffer (the
// caller may reuse it); the kernels run asynchronously on `stream` and errors surface at
// the latest in Finish*/Synchronize.
//
// Thread safety: not thread-safe; one instance per tensor, one thread at a time.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/streaming.h"
#include "quant/tensor_quantizer.h"

namespace loadstar::kernels {

class GpuQuantizer;

class GpuStreamingQuantizer final : public quant::TensorQuantizer {
 public:
  using Options = quant::StreamingQuantizer::Options;

  // `gpu` must outlive the quantizer; `stream` (may be null: the legacy stream) orders its
  // copies and kernels.
  static absl::StatusOr<std::unique_ptr<GpuStreamingQuantizer>> Create(const GpuQuantizer* gpu,
                                                                      Options options,
                                                                      cudaStream_t stream);
  ~GpuStreamingQuantizer() override;
  GpuStreamingQuantizer(const GpuStreamingQuantizer&) = delete;
  GpuStreamingQuantizer& operator=(const GpuStreamingQuantizer&) = delete;

  // Consumes the next `size` bytes of the tensor. InvalidArgument past the tensor's end.
  absl::Status Append(const void* data, size_t size) override;
  int64_t bytes_expected() const override { return total_bytes_; }
  int64_t bytes_consumed() const override { return consumed_; }

  // After every byte was appended (else FailedPrecondition): nests the absmax on the GPU
  // when spec.double_quant, waits for the stream and downloads the result.
  absl::StatusOr<quant::Quantized4bit> Finish4bit() override;
  absl::StatusOr<quant::QuantizedInt8> FinishInt8() override;

  // Device-resident outputs (valid while this object lives): 4-bit packed[(n+1)/2] and
  // absmax[blocks]; int8 weight[rows*cols] and scb[rows].
  const uint8_t* device_packed() const { return static_cast<const uint8_t*>(out_a_); }
  const float* device_absmax() const { return static_cast<const float*>(out_b_); }
  const int8_t* device_int8() const { return static_cast<const int8_t*>(out_a_); }
  const float* device_scb() const { return static_cast<const float*>(out_b_); }

 private:
  GpuStreamingQuantizer(const GpuQuantizer* gpu, Options options, cudaStream_t stream)
      : gpu_(gpu), opt_(std::move(options)), stream_(stream) {}
  absl::Status Init();
  // Uploads `elements` (whole units, or the tail) from host `data` and quantizes them.
  absl::Status ProcessUnits(const uint8_t* data, int64_t elements);
  // Grows a device scratch buffer to at least `bytes`.
  absl::Status Reserve(void** buffer, uint64_t* capacity, uint64_t bytes);

  const GpuQuantizer* const gpu_;
  Options opt_;
  cudaStream_t stream_;
  int64_t total_elements_ = 0;
  int64_t total_bytes_ = 0;
  int64_t consumed_ = 0;
  int64_t unit_elements_ = 0;  // blocksize, or cols for int8
  int64_t next_element_ = 0;   // first element not yet quantized
  std::vector<uint8_t> pending_;
  void* in_ = nullptr;  // device staging for raw units
  uint64_t in_capacity_ = 0;
  void* cast_ = nullptr;  // device staging for cast units
  uint64_t cast_capacity_ = 0;
  void* out_a_ = nullptr;  // packed | int8 weight
  void* out_b_ = nullptr;  // absmax | scb
};

}  // namespace loadstar::kernels
