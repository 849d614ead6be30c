// GpuQuantizer: the quantization of quant/blockwise.h (NF4/FP4 with optional double
// quant) and quant/int8.h (LLM.int8 rows) run as CUDA kernels. Same specs, same chunk
// contract and the same output bits as the CPU functions it mirrors (the kernels call the
// per-element functions of quant/blockwise_math.h); tests/kernels compare bytes.
//
// Two layers:
//  - Device-pointer methods (…Chunk, NestAbsmax, Dequantize4bitDevice): enqueue kernels on
//    the caller's stream and return; what the loader uses to quantize ring slots as they
//    land on the GPU. The 4-bit chunk rule is quant::Quantize4bitChunk's.
//  - Host-memory conveniences (Quantize4bit, QuantizeInt8, Dequantize4bit): upload, run,
//    download, synchronous; for tests, the Probe RPC and benchmarks.
//
// Thread safety: all methods are const and thread-safe; calls on one stream run in order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "kernels/quantize_kernels.h"
#include "quant/blockwise.h"
#include "quant/int8.h"

namespace loadstar::kernels {

// The kernels' element type for a floating dtype; InvalidArgument for anything but
// F32/F16/BF16.
absl::StatusOr<GpuElement> ElementOf(DType dtype);

class GpuQuantizer {
 public:
  // Binds to CUDA device `ordinal` and uploads the signed dynamic map (double quant).
  // FailedPrecondition "no usable GPU: ..." without a GPU.
  static absl::StatusOr<std::unique_ptr<GpuQuantizer>> Create(int ordinal = 0);
  ~GpuQuantizer();
  GpuQuantizer(const GpuQuantizer&) = delete;
  GpuQuantizer& operator=(const GpuQuantizer&) = delete;

  int ordinal() const { return ordinal_; }

  // As quant::Quantize4bitChunk over device pointers (spec.double_quant ignored).
  absl::Status Quantize4bitChunk(const quant::Fp4Spec& spec, DType in_dtype, const void* chunk,
                                 int64_t element_offset, int64_t count, int64_t total_elements,
                                 uint8_t* packed, float* absmax, cudaStream_t stream) const;
  // Double quant of a device absmax vector of n values into device codes[n] and
  // nested_absmax[ceil(n / 256)]; returns the offset. Synchronizes `stream` to read the
  // absmax, whose mean is taken on the host with quant::MeanOfAbsmax so both paths agree.
  absl::StatusOr<float> NestAbsmax(const float* absmax, int64_t n, uint8_t* codes,
                                   float* nested_absmax, cudaStream_t stream) const;
  // out[i] = T(lut[code_i] * absmax[i / blocksize]) for n elements, device pointers.
  absl::Status Dequantize4bitDevice(const quant::Fp4Spec& spec, const uint8_t* packed,
                                    const float* absmax, int64_t n, DType out_dtype, void* out,
                                    cudaStream_t stream) const;
  // As quant::QuantizeInt8RowsChunk over device pointers.
  absl::Status QuantizeInt8RowsChunk(DType in_dtype, const void* rows_data, int64_t row_offset,
                                     int64_t row_count, int64_t cols, int8_t* weight,
                                     float* scb, cudaStream_t stream) const;

  // Host-memory conveniences; same results as quant::Quantize4bit / QuantizeInt8 /
  // Dequantize4bit.
  absl::StatusOr<quant::Quantized4bit> Quantize4bit(const quant::Fp4Spec& spec, DType in_dtype,
                                                    const void* data,
                                                    const std::vector<int64_t>& shape) const;
  absl::StatusOr<quant::QuantizedInt8> QuantizeInt8(DType in_dtype, const void* data,
                                                    const std::vector<int64_t>& shape) const;
  absl::Status Dequantize4bit(const quant::Quantized4bit& q, DType out_dtype, void* out) const;

 private:
  GpuQuantizer(int ordinal, float* dynamic_map) : ordinal_(ordinal), dynamic_map_(dynamic_map) {}

  const int ordinal_;
  float* const dynamic_map_;  // device copy of quant::kDynamicMapSigned
};

}  // namespace loadstar::kernels
