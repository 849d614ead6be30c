#include "quant/ggml_row_stream.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "quant/ggml_dequant.h"

namespace loadstar::quant {
namespace {
constexpr int64_t kMaxValuesPerEmit = int64_t{1} << 20;  // 4 MiB of fp32
}  // namespace

GgmlRowStream::GgmlRowStream(GgmlType type, int64_t row_elems, int64_t rows,
                             int64_t permute_heads, int threads)
    : type_(type), row_elems_(row_elems), rows_(rows), threads_(threads) {
  const GgmlTypeInfo info = GgmlInfo(type);
  row_bytes_ = row_elems / info.block_elems * info.block_bytes;
  if (permute_heads > 0) {
    group_rows_ = rows / permute_heads;
    permute_dim_ = group_rows_ / 2;
  } else {
    group_rows_ = 1;
    permute_dim_ = 0;
  }
}

absl::Status GgmlRowStream::Emit(const uint8_t* groups, int64_t n_groups, const Sink& sink) {
  const GgmlTypeInfo info = GgmlInfo(type_);
  const int64_t group_elems = group_rows_ * row_elems_;
  const int64_t group_bytes = group_rows_ * row_bytes_;
  const int64_t per_emit = std::max<int64_t>(1, kMaxValuesPerEmit / group_elems);
  for (int64_t g = 0; g < n_groups; g += per_emit) {
    const int64_t n = std::min(per_emit, n_groups - g);
    values_.resize(static_cast<size_t>(n * group_elems));
    DequantizeGgml(type_, groups + g * group_bytes, n * group_bytes / info.block_bytes,
                   values_.data(), threads_);
    if (permute_dim_ == 0) {
      RETURN_IF_ERROR(sink(values_.data(), n * group_elems));
      continue;
    }
    permuted_.resize(values_.size());
    for (int64_t k = 0; k < n; ++k) {
      const float* in = values_.data() + k * group_elems;
      float* out = permuted_.data() + k * group_elems;
      for (int64_t r = 0; r < group_rows_; ++r) {
        const int64_t o = (r % 2) * permute_dim_ + r / 2;
        std::memcpy(out + o * row_elems_, in + r * row_elems_, row_elems_ * sizeof(float));
      }
    }
    RETURN_IF_ERROR(sink(permuted_.data(), n * group_elems));
  }
  return absl::OkStatus();
}

absl::Status GgmlRowStream::Append(const char* data, uint64_t bytes, const Sink& sink) {
  if (bytes > total_bytes() - consumed_) {
    return absl::InvalidArgumentError(fmt::format(
        "ggml {} tensor: {} more bytes after {} of {}", GgmlInfo(type_).name, bytes, consumed_,
        total_bytes()));
  }
  consumed_ += bytes;
  const uint64_t group_bytes = static_cast<uint64_t>(group_rows_ * row_bytes_);
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  while (bytes > 0) {
    if (!pending_.empty() || bytes < group_bytes) {
      const uint64_t take = std::min<uint64_t>(bytes, group_bytes - pending_.size());
      pending_.append(reinterpret_cast<const char*>(p), take);
      p += take, bytes -= take;
      if (pending_.size() == group_bytes) {
        RETURN_IF_ERROR(Emit(reinterpret_cast<const uint8_t*>(pending_.data()), 1, sink));
        pending_.clear();
      }
      continue;
    }
    const uint64_t whole = bytes / group_bytes;
    RETURN_IF_ERROR(Emit(p, static_cast<int64_t>(whole), sink));
    p += whole * group_bytes, bytes -= whole * group_bytes;
  }
  return absl::OkStatus();
}

absl::Status GgmlRowStream::Finish() const {
  if (consumed_ != total_bytes() || !pending_.empty()) {
    return absl::InvalidArgumentError(fmt::format("ggml {} tensor: got {} of {} bytes",
                                                  GgmlInfo(type_).name, consumed_,
                                                  total_bytes()));
  }
  return absl::OkStatus();
}

}  // namespace loadstar::quant
