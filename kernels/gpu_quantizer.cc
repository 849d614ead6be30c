#include "kernels/gpu_quantizer.h"

#include <fmt/format.h>

#include "base/status_macros.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_status.h"
#include "kernels/quantize_kernels.h"
#include "quant/double_quant.h"
#include "quant/quant_types.h"

namespace loadstar::kernels {

absl::StatusOr<GpuElement> ElementOf(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return GpuElement::kF32;
    case DType::kF16:
      return GpuElement::kF16;
    case DType::kBF16:
      return GpuElement::kBF16;
    default:
      return absl::InvalidArgumentError(
          fmt::format("GPU quantization takes F32/F16/BF16, not {}", DTypeName(dtype)));
  }
}

namespace {

Gpu4bit KindOf(quant::QuantType type) {
  return type == quant::QuantType::kFp4 ? Gpu4bit::kFp4 : Gpu4bit::kNf4;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// cudaMalloc'd bytes freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) CUDA_IGNORE_ERROR(cudaFree(ptr_));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  absl::Status Allocate(uint64_t bytes) {
    CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes));
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// Stream created on the current device, destroyed on scope exit.
class ScopedStream {
 public:
  ~ScopedStream() {
    if (stream_ != nullptr) CUDA_IGNORE_ERROR(cudaStreamDestroy(stream_));
  }
  absl::Status Create() {
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    return absl::OkStatus();
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuQuantizer>> GpuQuantizer::Create(int ordinal) {
  auto count = UsableGpuCount();
  if (!count.ok()) return count.status();
  if (ordinal < 0 || ordinal >= *count) {
    return absl::InvalidArgumentError(
        fmt::format("no CUDA device {} ({} visible)", ordinal, *count));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  void* map = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&map, sizeof(quant::kDynamicMapSigned)));
  const cudaError_t copied = cudaMemcpy(map, quant::kDynamicMapSigned,
                                        sizeof(quant::kDynamicMapSigned), cudaMemcpyHostToDevice);
  if (copied != cudaSuccess) {
    CUDA_IGNORE_ERROR(cudaFree(map));
    CUDA_RETURN_IF_ERROR(copied);
  }
  return std::unique_ptr<GpuQuantizer>(new GpuQuantizer(ordinal, static_cast<float*>(map)));
}

GpuQuantizer::~GpuQuantizer() {
  CUDA_IGNORE_ERROR(cudaSetDevice(ordinal_));
  CUDA_IGNORE_ERROR(cudaFree(dynamic_map_));
}

absl::Status GpuQuantizer::Quantize4bitChunk(const quant::Fp4Spec& spec, DType in_dtype,
                                             const void* chunk, int64_t element_offset,
                                             int64_t count, int64_t total_elements,
                                             uint8_t* packed, float* absmax,
                                             cudaStream_t stream) const {
  if (absl::Status s = quant::Validate4bit(spec, in_dtype); !s.ok()) return s;
  auto element = ElementOf(in_dtype);
  if (!element.ok()) return element.status();
  const int64_t bs = spec.blocksize;
  if (element_offset < 0 || count < 1 || element_offset + count > total_elements ||
      element_offset % bs != 0 ||
      (count % bs != 0 && element_offset + count != total_elements)) {
    return absl::InvalidArgumentError(fmt::format(
        "4-bit chunk [{}, {}) of {} elements must start on a block of {} and hold whole "
        "blocks unless it ends the tensor",
        element_offset, element_offset + count, total_elements, bs));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  // element_offset is even (a multiple of the blocksize), so the chunk's bytes start at
  // element_offset / 2 and its absmax at element_offset / bs.
  CUDA_RETURN_IF_ERROR(LaunchQuantize4bit(KindOf(spec.type), *element, chunk, count,
                                          spec.blocksize, absmax + element_offset / bs,
                                          packed + element_offset / 2, stream));
  return absl::OkStatus();
}

absl::StatusOr<float> GpuQuantizer::NestAbsmax(const float* absmax, int64_t n, uint8_t* codes,
                                               float* nested_absmax,
                                               cudaStream_t stream) const {
  if (n < 1) return absl::InvalidArgumentError("double quant of an empty absmax vector");
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  std::vector<float> host(n);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host.data(), absmax, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  const float offset = quant::MeanOfAbsmax(host.data(), n);
  CUDA_RETURN_IF_ERROR(
      LaunchQuantizeNestedAbsmax(absmax, n, offset, dynamic_map_, codes, nested_absmax, stream));
  return offset;
}

absl::Status GpuQuantizer::Dequantize4bitDevice(const quant::Fp4Spec& spec,
                                                const uint8_t* packed, const float* absmax,
                                                int64_t n, DType out_dtype, void* out,
                                                cudaStream_t stream) const {
  if (absl::Status s = quant::Validate4bit(spec, out_dtype); !s.ok()) return s;
  auto element = ElementOf(out_dtype);
  if (!element.ok()) return element.status();
  if (n < 1) return absl::InvalidArgumentError("dequantize of 0 elements");
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  CUDA_RETURN_IF_ERROR(LaunchDequantize4bit(KindOf(spec.type), *element, packed, absmax, n,
                                            spec.blocksize, out, stream));
  return absl::OkStatus();
}

absl::Status GpuQuantizer::QuantizeInt8RowsChunk(DType in_dtype, const void* rows_data,
                                                 int64_t row_offset, int64_t row_count,
                                                 int64_t cols, int8_t* weight, float* scb,
                                                 cudaStream_t stream) const {
  auto element = ElementOf(in_dtype);
  if (!element.ok()) return element.status();
  if (row_offset < 0 || row_count < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        fmt::format("int8 rows [{}, +{}) x {} columns", row_offset, row_count, cols));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  CUDA_RETURN_IF_ERROR(LaunchQuantizeInt8Rows(*element, rows_data, row_count, cols,
                                              /*threshold=*/0.0f, weight + row_offset * cols,
                                              scb + row_offset, stream));
  return absl::OkStatus();
}

absl::StatusOr<quant::Quantized4bit> GpuQuantizer::Quantize4bit(
    const quant::Fp4Spec& spec, DType in_dtype, const void* data,
    const std::vector<int64_t>& shape) const {
  if (absl::Status s = quant::Validate4bit(spec, in_dtype); !s.ok()) return s;
  const int64_t n = NumElements(shape);
  if (shape.empty() || n < 1) return absl::InvalidArgumentError("4-bit quantize of 0 elements");
  const int64_t blocks = (n + spec.blocksize - 1) / spec.blocksize;
  const uint64_t in_bytes = static_cast<uint64_t>(n) * DTypeSize(in_dtype);
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  ScopedStream stream;
  RETURN_IF_ERROR(stream.Create());
  DeviceBuffer d_in, d_packed, d_absmax, d_codes, d_nested;
  RETURN_IF_ERROR(d_in.Allocate(in_bytes));
  RETURN_IF_ERROR(d_packed.Allocate((n + 1) / 2));
  RETURN_IF_ERROR(d_absmax.Allocate(blocks * sizeof(float)));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(d_in.as<void>(), data, in_bytes, cudaMemcpyHostToDevice, stream.get()));
  RETURN_IF_ERROR(Quantize4bitChunk(spec, in_dtype, d_in.as<void>(), 0, n, n,
                                       d_packed.as<uint8_t>(), d_absmax.as<float>(),
                                       stream.get()));
  quant::Quantized4bit q;
  q.spec = spec;
  q.dtype = in_dtype;
  q.shape = shape;
  q.packed.resize((n + 1) / 2);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.packed.data(), d_packed.as<void>(), q.packed.size(),
                                       cudaMemcpyDeviceToHost, stream.get()));
  if (spec.double_quant) {
    const int64_t nested_blocks = (blocks + quant::kNestedBlocksize - 1) / quant::kNestedBlocksize;
    RETURN_IF_ERROR(d_codes.Allocate(blocks));
    RETURN_IF_ERROR(d_nested.Allocate(nested_blocks * sizeof(float)));
    auto offset = NestAbsmax(d_absmax.as<float>(), blocks, d_codes.as<uint8_t>(),
                             d_nested.as<float>(), stream.get());
    if (!offset.ok()) return offset.status();
    q.nested.offset = *offset;
    q.nested.codes.resize(blocks);
    q.nested.nested_absmax.resize(nested_blocks);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.nested.codes.data(), d_codes.as<void>(), blocks,
                                         cudaMemcpyDeviceToHost, stream.get()));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.nested.nested_absmax.data(), d_nested.as<void>(),
                                         nested_blocks * sizeof(float), cudaMemcpyDeviceToHost,
                                         stream.get()));
  } else {
    q.absmax.resize(blocks);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.absmax.data(), d_absmax.as<void>(),
                                         blocks * sizeof(float), cudaMemcpyDeviceToHost,
                                         stream.get()));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream.get()));
  return q;
}

absl::StatusOr<quant::QuantizedInt8> GpuQuantizer::QuantizeInt8(
    DType in_dtype, const void* data, const std::vector<int64_t>& shape) const {
  if (absl::Status s = quant::ValidateInt8(in_dtype, shape); !s.ok()) return s;
  const int64_t rows = shape[0], cols = shape[1];
  const uint64_t in_bytes = static_cast<uint64_t>(rows * cols) * DTypeSize(in_dtype);
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  ScopedStream stream;
  RETURN_IF_ERROR(stream.Create());
  DeviceBuffer d_in, d_q, d_scb;
  RETURN_IF_ERROR(d_in.Allocate(in_bytes));
  RETURN_IF_ERROR(d_q.Allocate(rows * cols));
  RETURN_IF_ERROR(d_scb.Allocate(rows * sizeof(float)));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(d_in.as<void>(), data, in_bytes, cudaMemcpyHostToDevice, stream.get()));
  RETURN_IF_ERROR(QuantizeInt8RowsChunk(in_dtype, d_in.as<void>(), 0, rows, cols,
                                           d_q.as<int8_t>(), d_scb.as<float>(), stream.get()));
  quant::QuantizedInt8 q;
  q.shape = shape;
  q.dtype = in_dtype;
  q.weight.resize(rows * cols);
  q.scb.resize(rows);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.weight.data(), d_q.as<void>(), rows * cols,
                                       cudaMemcpyDeviceToHost, stream.get()));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.scb.data(), d_scb.as<void>(), rows * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream.get()));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream.get()));
  return q;
}

absl::Status GpuQuantizer::Dequantize4bit(const quant::Quantized4bit& q, DType out_dtype,
                                          void* out) const {
  const int64_t n = q.num_elements();
  if (n < 1) return absl::InvalidArgumentError("dequantize of 0 elements");
  const std::vector<float> absmax = q.Absmax();  // rebuilt on the host when nested
  const uint64_t out_bytes = static_cast<uint64_t>(n) * DTypeSize(out_dtype);
  CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  ScopedStream stream;
  RETURN_IF_ERROR(stream.Create());
  DeviceBuffer d_packed, d_absmax, d_out;
  RETURN_IF_ERROR(d_packed.Allocate(q.packed.size()));
  RETURN_IF_ERROR(d_absmax.Allocate(absmax.size() * sizeof(float)));
  RETURN_IF_ERROR(d_out.Allocate(out_bytes));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_packed.as<void>(), q.packed.data(), q.packed.size(),
                                       cudaMemcpyHostToDevice, stream.get()));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_absmax.as<void>(), absmax.data(),
                                       absmax.size() * sizeof(float), cudaMemcpyHostToDevice,
                                       stream.get()));
  RETURN_IF_ERROR(Dequantize4bitDevice(q.spec, d_packed.as<uint8_t>(), d_absmax.as<float>(),
                                          n, out_dtype, d_out.as<void>(), stream.get()));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out, d_out.as<void>(), out_bytes, cudaMemcpyDeviceToHost, stream.get()));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream.get()));
  return absl::OkStatus();
}

}  // namespace loadstar::kernels
