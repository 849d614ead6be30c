#include "quant/streaming.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "quant/policy.h"
#include "quant/prepare.h"

namespace loadstar {
namespace quant {

absl::StatusOr<std::unique_ptr<StreamingQuantizer>> StreamingQuantizer::Create(Options options) {
  auto floating = [](DType d) {
    return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16;
  };
  if (!floating(options.in_dtype) || !floating(options.quantize_dtype)) {
    return absl::InvalidArgumentError(
        fmt::format("streaming quantization needs F32/F16/BF16, got {} -> {}",
                    DTypeName(options.in_dtype), DTypeName(options.quantize_dtype)));
  }
  if (options.type == QuantType::kInt8) {
    if (absl::Status s = ValidateInt8(options.quantize_dtype, options.shape); !s.ok()) return s;
  } else {
    options.spec.type = options.type;
    if (absl::Status s = Validate4bit(options.spec, options.quantize_dtype); !s.ok()) return s;
    int64_t n = 1;
    for (int64_t d : options.shape) {
      if (d < 0) return absl::InvalidArgumentError("negative dimension");
      n *= d;
    }
    if (n == 0) return absl::InvalidArgumentError("cannot quantize an empty tensor");
  }
  return std::unique_ptr<StreamingQuantizer>(new StreamingQuantizer(std::move(options)));
}

StreamingQuantizer::StreamingQuantizer(Options options) : opt_(std::move(options)) {
  if (opt_.transpose_conv1d && opt_.shape.size() == 2) {
    // Quantize the [out, in] tensor; the input arrives as [in, out] and is kept whole.
    std::swap(opt_.shape[0], opt_.shape[1]);
  } else {
    opt_.transpose_conv1d = false;
  }
  total_elements_ = 1;
  for (int64_t d : opt_.shape) total_elements_ *= d;
  total_bytes_ = total_elements_ * static_cast<int64_t>(DTypeSize(opt_.in_dtype));
  if (opt_.type == QuantType::kInt8) {
    unit_elements_ = opt_.shape[1];
    weight_.resize(static_cast<size_t>(total_elements_));
    scb_.resize(static_cast<size_t>(opt_.shape[0]));
  } else {
    unit_elements_ = opt_.spec.blocksize;
    packed_.resize(static_cast<size_t>((total_elements_ + 1) / 2));
    absmax_.resize(static_cast<size_t>((total_elements_ + unit_elements_ - 1) / unit_elements_));
  }
}

absl::Status StreamingQuantizer::ProcessUnits(const uint8_t* data, int64_t units,
                                              int64_t elements) {
  const void* values = data;
  if (opt_.in_dtype != opt_.quantize_dtype) {
    cast_buffer_.resize(static_cast<size_t>(elements) * DTypeSize(opt_.quantize_dtype));
    if (absl::Status s = CastFloatTensor(opt_.in_dtype, data, elements, opt_.quantize_dtype,
                                         cast_buffer_.data());
        !s.ok()) {
      return s;
    }
    values = cast_buffer_.data();
  }
  absl::Status s;
  if (opt_.type == QuantType::kInt8) {
    s = QuantizeInt8RowsChunk(opt_.quantize_dtype, values, next_element_ / unit_elements_,
                              units, unit_elements_, weight_.data(), scb_.data(), opt_.threads);
  } else {
    s = Quantize4bitChunk(opt_.spec, opt_.quantize_dtype, values, next_element_, elements,
                          total_elements_, packed_.data(), absmax_.data(), opt_.threads);
  }
  next_element_ += elements;
  return s;
}

absl::Status StreamingQuantizer::Append(const void* data, size_t size) {
  if (consumed_ + static_cast<int64_t>(size) > total_bytes_) {
    return absl::InvalidArgumentError(fmt::format(
        "{} bytes appended past the tensor's {} bytes", consumed_ + size, total_bytes_));
  }
  const int64_t esize = static_cast<int64_t>(DTypeSize(opt_.in_dtype));
  if (opt_.transpose_conv1d) {
    const uint8_t* bytes = static_cast<const uint8_t*>(data);
    whole_.insert(whole_.end(), bytes, bytes + size);
    consumed_ += static_cast<int64_t>(size);
    if (consumed_ < total_bytes_) return absl::OkStatus();
    std::vector<uint8_t> t(whole_.size());
    // Input rows = in = shape[1] (after the swap), cols = out = shape[0].
    Transpose2D(whole_.data(), opt_.shape[1], opt_.shape[0], static_cast<size_t>(esize), t.data());
    whole_.clear();
    whole_.shrink_to_fit();
    return ProcessUnits(t.data(), (total_elements_ + unit_elements_ - 1) / unit_elements_,
                        total_elements_);
  }
  const int64_t unit_bytes = unit_elements_ * esize;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  int64_t left = static_cast<int64_t>(size);
  consumed_ += left;
  const bool at_end = consumed_ == total_bytes_;
  // The last unit may be short (4-bit tail block).
  auto unit_bytes_at = [&](int64_t element) {
    return std::min(unit_elements_, total_elements_ - element) * esize;
  };
  // 1. Complete a pending unit.
  if (!pending_.empty()) {
    const int64_t need = unit_bytes_at(next_element_) - static_cast<int64_t>(pending_.size());
    const int64_t take = std::min(need, left);
    pending_.insert(pending_.end(), p, p + take);
    p += take;
    left -= take;
    if (take < need) return absl::OkStatus();
    const int64_t elements = static_cast<int64_t>(pending_.size()) / esize;
    if (absl::Status s = ProcessUnits(pending_.data(), 1, elements); !s.ok()) return s;
    pending_.clear();
  }
  // 2. Whole units straight from the caller's buffer (plus the short tail if it is here).
  int64_t units = left / unit_bytes;
  int64_t bytes = units * unit_bytes;
  if (at_end && bytes < left) bytes = left;  // the tail
  if (bytes > 0) {
    const int64_t elements = bytes / esize;
    if (absl::Status s = ProcessUnits(p, (elements + unit_elements_ - 1) / unit_elements_,
                                      elements);
        !s.ok()) {
      return s;
    }
    p += bytes;
    left -= bytes;
  }
  // 3. Keep the rest.
  pending_.assign(p, p + left);
  return absl::OkStatus();
}

absl::StatusOr<Quantized4bit> StreamingQuantizer::Finish4bit() {
  if (opt_.type == QuantType::kInt8) return absl::FailedPreconditionError("int8 stream: use FinishInt8");
  if (consumed_ != total_bytes_ || next_element_ != total_elements_) {
    return absl::FailedPreconditionError(
        fmt::format("tensor incomplete: {} of {} bytes", consumed_, total_bytes_));
  }
  return quant::Finish4bit(opt_.spec, opt_.quantize_dtype, opt_.shape, std::move(packed_),
                           std::move(absmax_));
}

absl::StatusOr<QuantizedInt8> StreamingQuantizer::FinishInt8() {
  if (opt_.type != QuantType::kInt8) return absl::FailedPreconditionError("4-bit stream: use Finish4bit");
  if (consumed_ != total_bytes_ || next_element_ != total_elements_) {
    return absl::FailedPreconditionError(
        fmt::format("tensor incomplete: {} of {} bytes", consumed_, total_bytes_));
  }
  QuantizedInt8 q;
  q.shape = opt_.shape;
  q.dtype = opt_.quantize_dtype;
  q.weight = std::move(weight_);
  q.scb = std::move(scb_);
  return q;
}

}  // namespace quant
}  // namespace loadstar
