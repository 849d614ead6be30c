// GgmlRowStream: dequantizes a packed ggml tensor (quant/ggml_types.h) that arrives in
// chunks of any size (the load pipeline's 4 KiB-multiple reads do not respect 34-byte
// Q8_0 blocks) and hands on its fp32 values in the row order of the Hugging Face tensor,
// undoing llama.cpp's rotary permutation of q/k rows when asked (transformers'
// LlamaTensorProcessor._reverse_permute_weights: within each head's 2*dim rows, input row
// 2i + j becomes output row j*dim + i).
//
// Values reach the sink in order, in pieces of whole rows (at most about 4 MiB of fp32),
// so a downstream streaming quantizer sees the same sequence it would see from the
// dequantized tensor. Bit-exact with DequantizeGgmlRef on the whole tensor.
//
// Thread safety: one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "quant/ggml_types.h"

namespace loadstar::quant {

class GgmlRowStream {
 public:
  using Sink = std::function<absl::Status(const float* values, int64_t count)>;

  // REQUIRES: row_elems a multiple of the type's block; rows divisible into
  // permute_heads groups of an even row count when permute_heads > 0.
  GgmlRowStream(GgmlType type, int64_t row_elems, int64_t rows, int64_t permute_heads,
                int threads = 1);

  // Consumes `bytes` more bytes of the packed tensor. InvalidArgument past its end.
  absl::Status Append(const char* data, uint64_t bytes, const Sink& sink);
  // InvalidArgument unless exactly the tensor's bytes were appended.
  absl::Status Finish() const;

  uint64_t total_bytes() const { return static_cast<uint64_t>(rows_) * row_bytes_; }

 private:
  absl::Status Emit(const uint8_t* groups, int64_t n_groups, const Sink& sink);

  GgmlType type_;
  int64_t row_elems_, rows_, row_bytes_;
  int64_t group_rows_;  // rows handled together (a head's rows when permuting)
  int64_t permute_dim_; // dim of the permutation (0: none)
  int threads_;
  uint64_t consumed_ = 0;
  std::string pending_;  // an incomplete group
  std::vector<float> values_, permuted_;
};

}  // namespace loadstar::quant
