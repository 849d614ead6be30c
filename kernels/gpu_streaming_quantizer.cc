#include "kernels/gpu_streaming_quantizer.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/status_macros.h"
#include "kernels/cuda_status.h"
#include "kernels/gpu_quantizer.h"
#include "kernels/quantize_kernels.h"
#include "quant/quant_types.h"

namespace loadstar::kernels {

absl::StatusOr<std::unique_ptr<GpuStreamingQuantizer>> GpuStreamingQuantizer::Create(
    const GpuQuantizer* gpu, Options options, cudaStream_t stream) {
  if (gpu == nullptr) return absl::InvalidArgumentError("null GpuQuantizer");
  std::unique_ptr<GpuStreamingQuantizer> q(
      new GpuStreamingQuantizer(gpu, std::move(options), stream));
  RETURN_IF_ERROR(q->Init());
  return q;
}

absl::Status GpuStreamingQuantizer::Init() {
  if (opt_.type != quant::QuantType::kNf4 && opt_.type != quant::QuantType::kFp4 &&
      opt_.type != quant::QuantType::kInt8) {
    return absl::InvalidArgumentError("streaming quantization needs nf4, fp4 or int8");
  }
  if (opt_.transpose_conv1d) {
    // A transposed block spans every input row: nothing to stream. The CPU path does it.
    return absl::InvalidArgumentError("GPU streaming quantization of a Conv1D weight");
  }
  RETURN_IF_ERROR(ElementOf(opt_.in_dtype).status());
  RETURN_IF_ERROR(ElementOf(opt_.quantize_dtype).status());
  total_elements_ = 1;
  for (int64_t d : opt_.shape) {
    if (d < 1) return absl::InvalidArgumentError("tensor dimensions must be >= 1");
    total_elements_ *= d;
  }
  if (opt_.shape.empty()) return absl::InvalidArgumentError("tensor shape is empty");
  total_bytes_ = total_elements_ * static_cast<int64_t>(DTypeSize(opt_.in_dtype));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(gpu_->ordinal()));
  if (opt_.type == quant::QuantType::kInt8) {
    RETURN_IF_ERROR(quant::ValidateInt8(opt_.quantize_dtype, opt_.shape));
    unit_elements_ = opt_.shape[1];
    CUDA_RETURN_IF_ERROR(cudaMalloc(&out_a_, total_elements_));
    CUDA_RETURN_IF_ERROR(cudaMalloc(&out_b_, opt_.shape[0] * sizeof(float)));
  } else {
    opt_.spec.type = opt_.type;
    RETURN_IF_ERROR(quant::Validate4bit(opt_.spec, opt_.quantize_dtype));
    unit_elements_ = opt_.spec.blocksize;
    const int64_t blocks = (total_elements_ + unit_elements_ - 1) / unit_elements_;
    CUDA_RETURN_IF_ERROR(cudaMalloc(&out_a_, (total_elements_ + 1) / 2));
    CUDA_RETURN_IF_ERROR(cudaMalloc(&out_b_, blocks * sizeof(float)));
  }
  return absl::OkStatus();
}

GpuStreamingQuantizer::~GpuStreamingQuantizer() {
  CUDA_IGNORE_ERROR(cudaSetDevice(gpu_->ordinal()));
  CUDA_IGNORE_ERROR(cudaStreamSynchronize(stream_));
  for (void* p : {in_, cast_, out_a_, out_b_}) {
    if (p != nullptr) CUDA_IGNORE_ERROR(cudaFree(p));
  }
}

absl::Status GpuStreamingQuantizer::Reserve(void** buffer, uint64_t* capacity, uint64_t bytes) {
  if (*capacity >= bytes) return absl::OkStatus();
  // The old buffer may still be read by queued work: wait before freeing it.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (*buffer != nullptr) CUDA_RETURN_IF_ERROR(cudaFree(*buffer));
  *buffer = nullptr;
  *capacity = 0;
  CUDA_RETURN_IF_ERROR(cudaMalloc(buffer, bytes));
  *capacity = bytes;
  return absl::OkStatus();
}

absl::Status GpuStreamingQuantizer::ProcessUnits(const uint8_t* data, int64_t elements) {
  const uint64_t in_bytes = static_cast<uint64_t>(elements) * DTypeSize(opt_.in_dtype);
  RETURN_IF_ERROR(Reserve(&in_, &in_capacity_, in_bytes));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(in_, data, in_bytes, cudaMemcpyHostToDevice, stream_));
  const void* values = in_;
  if (opt_.in_dtype != opt_.quantize_dtype) {
    RETURN_IF_ERROR(Reserve(&cast_, &cast_capacity_,
                            static_cast<uint64_t>(elements) * DTypeSize(opt_.quantize_dtype)));
    CUDA_RETURN_IF_ERROR(LaunchCast(*ElementOf(opt_.in_dtype), in_, elements,
                                    *ElementOf(opt_.quantize_dtype), cast_, stream_));
    values = cast_;
  }
  if (opt_.type == quant::QuantType::kInt8) {
    RETURN_IF_ERROR(gpu_->QuantizeInt8RowsChunk(
        opt_.quantize_dtype, values, next_element_ / unit_elements_, elements / unit_elements_,
        unit_elements_, static_cast<int8_t*>(out_a_), static_cast<float*>(out_b_), stream_));
  } else {
    RETURN_IF_ERROR(gpu_->Quantize4bitChunk(opt_.spec, opt_.quantize_dtype, values,
                                            next_element_, elements, total_elements_,
                                            static_cast<uint8_t*>(out_a_),
                                            static_cast<float*>(out_b_), stream_));
  }
  next_element_ += elements;
  // The caller may reuse its buffer once Append returns (and a pinned source makes the
  // upload asynchronous): wait until this call's bytes are consumed.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status GpuStreamingQuantizer::Append(const void* data, size_t size) {
  if (consumed_ + static_cast<int64_t>(size) > total_bytes_) {
    return absl::InvalidArgumentError(fmt::format(
        "{} bytes appended past the tensor's {} bytes", consumed_ + size, total_bytes_));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(gpu_->ordinal()));
  const int64_t esize = static_cast<int64_t>(DTypeSize(opt_.in_dtype));
  const int64_t unit_bytes = unit_elements_ * esize;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  int64_t left = static_cast<int64_t>(size);
  consumed_ += left;
  const bool at_end = consumed_ == total_bytes_;
  // 1. Complete the pending unit (the tail block may be short).
  if (!pending_.empty()) {
    const int64_t unit_here =
        std::min(unit_elements_, total_elements_ - next_element_) * esize;
    const int64_t take = std::min(unit_here - static_cast<int64_t>(pending_.size()), left);
    pending_.insert(pending_.end(), p, p + take);
    p += take;
    left -= take;
    if (static_cast<int64_t>(pending_.size()) < unit_here) return absl::OkStatus();
    RETURN_IF_ERROR(ProcessUnits(pending_.data(), unit_here / esize));
    pending_.clear();
  }
  // 2. Whole units straight from the caller's buffer, plus the tail when it is here.
  int64_t bytes = left / unit_bytes * unit_bytes;
  if (at_end && bytes < left) bytes = left;
  if (bytes > 0) {
    RETURN_IF_ERROR(ProcessUnits(p, bytes / esize));
    p += bytes;
    left -= bytes;
  }
  // 3. Keep the rest (less than a unit).
  pending_.assign(p, p + left);
  return absl::OkStatus();
}

absl::StatusOr<quant::Quantized4bit> GpuStreamingQuantizer::Finish4bit() {
  if (opt_.type == quant::QuantType::kInt8) {
    return absl::FailedPreconditionError("int8 stream: use FinishInt8");
  }
  if (consumed_ != total_bytes_ || next_element_ != total_elements_) {
    return absl::FailedPreconditionError(
        fmt::format("tensor incomplete: {} of {} bytes", consumed_, total_bytes_));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(gpu_->ordinal()));
  const int64_t blocks = (total_elements_ + unit_elements_ - 1) / unit_elements_;
  quant::Quantized4bit q;
  q.spec = opt_.spec;
  q.dtype = opt_.quantize_dtype;
  q.shape = opt_.shape;
  q.packed.resize((total_elements_ + 1) / 2);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.packed.data(), out_a_, q.packed.size(),
                                       cudaMemcpyDeviceToHost, stream_));
  if (opt_.spec.double_quant) {
    const int64_t nested_blocks =
        (blocks + quant::kNestedBlocksize - 1) / quant::kNestedBlocksize;
    void* codes = nullptr;
    void* nested = nullptr;
    CUDA_RETURN_IF_ERROR(cudaMalloc(&codes, blocks));
    const cudaError_t e = cudaMalloc(&nested, nested_blocks * sizeof(float));
    if (e != cudaSuccess) {
      CUDA_IGNORE_ERROR(cudaFree(codes));
      CUDA_RETURN_IF_ERROR(e);
    }
    auto offset = gpu_->NestAbsmax(static_cast<const float*>(out_b_), blocks,
                                   static_cast<uint8_t*>(codes), static_cast<float*>(nested),
                                   stream_);
    absl::Status s = offset.status();
    if (s.ok()) {
      q.nested.offset = *offset;
      q.nested.codes.resize(blocks);
      q.nested.nested_absmax.resize(nested_blocks);
      cudaError_t c = cudaMemcpyAsync(q.nested.codes.data(), codes, blocks,
                                      cudaMemcpyDeviceToHost, stream_);
      if (c == cudaSuccess) {
        c = cudaMemcpyAsync(q.nested.nested_absmax.data(), nested,
                            nested_blocks * sizeof(float), cudaMemcpyDeviceToHost, stream_);
      }
      if (c == cudaSuccess) c = cudaStreamSynchronize(stream_);
      if (c != cudaSuccess) s = CudaError(c, "download nested absmax", __FILE__, __LINE__);
    }
    CUDA_IGNORE_ERROR(cudaFree(codes));
    CUDA_IGNORE_ERROR(cudaFree(nested));
    RETURN_IF_ERROR(s);
  } else {
    q.absmax.resize(blocks);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.absmax.data(), out_b_, blocks * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return q;
}

absl::StatusOr<quant::QuantizedInt8> GpuStreamingQuantizer::FinishInt8() {
  if (opt_.type != quant::QuantType::kInt8) {
    return absl::FailedPreconditionError("4-bit stream: use Finish4bit");
  }
  if (consumed_ != total_bytes_ || next_element_ != total_elements_) {
    return absl::FailedPreconditionError(
        fmt::format("tensor incomplete: {} of {} bytes", consumed_, total_bytes_));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(gpu_->ordinal()));
  quant::QuantizedInt8 q;
  q.shape = opt_.shape;
  q.dtype = opt_.quantize_dtype;
  q.weight.resize(total_elements_);
  q.scb.resize(opt_.shape[0]);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.weight.data(), out_a_, total_elements_,
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(q.scb.data(), out_b_, q.scb.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return q;
}

}  // namespace loadstar::kernels
