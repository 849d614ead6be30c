// 4-bit blockwise quantization (NF4 / FP4), bit-exact with bitsandbytes' CUDA kernels
// (quantize_4bit / dequantize_4bit), with optional double quantization of the absmax.
//
// Format (per tensor of n elements, flattened row-major, blocks of `blocksize`):
//   packed[(n + 1) / 2]  uint8   element 2j in the high nibble of byte j, 2j+1 in the low
//   absmax[ceil(n / bs)] fp32    max |x| of each block's real elements
// or, with double quant, absmax replaced by NestedAbsmax (quant/double_quant.h).
// The per-element math is quant/blockwise_math.h (shared with the CUDA kernels).
//
// Two implementations: the *Ref functions are the scalar specification; Quantize4bit /
// Dequantize4bit use the best SIMD kernels and threads and produce the same bits.
//
// Streaming (quantize while bytes arrive): blocks are independent, so a tensor can be
// quantized chunk by chunk with Quantize4bitChunk into caller-owned whole-tensor buffers;
// each chunk starts at a multiple of the blocksize and holds a multiple of it, except the
// chunk that ends the tensor. Double quant needs every absmax, so call NestAbsmax
// (double_quant.h) once all chunks are done (Finish4bit does this).
//
// HF parity: transformers casts a weight to torch_dtype before bitsandbytes quantizes it,
// so pass torch_dtype values (quant/prepare.h does the whole sequence per tensor).
//
// Thread-safety: all functions are thread-safe; distinct chunks of one tensor may be
// quantized concurrently into the same buffers.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/dtype.h"
#include "quant/double_quant.h"
#include "quant/quant_types.h"

namespace loadstar {
namespace quant {

// What to produce. type must be kNf4 or kFp4.
struct Fp4Spec {
  QuantType type = QuantType::kNf4;      // kNf4 | kFp4
  int blocksize = kDefaultBlocksize;     // power of two in [32, 4096]
  bool double_quant = false;             // nest the absmax (bnb_4bit_use_double_quant)
};

struct Quantized4bit {
  Fp4Spec spec;                          // how it was quantized
  DType dtype = DType::kF16;             // dtype of the original tensor (quant_state "dtype")
  std::vector<int64_t> shape;            // original shape (quant_state "shape")
  std::vector<uint8_t> packed;           // (n + 1) / 2 bytes, high nibble first
  std::vector<float> absmax;             // one per block; empty when nested
  NestedAbsmax nested;                   // filled instead of absmax when spec.double_quant

  int64_t num_elements() const;
  int64_t num_blocks() const;
  // The fp32 absmax per block (rebuilt from the nested state when double-quantized).
  std::vector<float> Absmax() const;
};

// Options for the optimized path.
struct QuantizeOptions {
  int threads = 0;                       // 0: all hardware threads; 1: the calling thread only
};

// InvalidArgument unless the spec and input dtype (F32/F16/BF16) are supported.
absl::Status Validate4bit(const Fp4Spec& spec, DType in_dtype);

// Scalar reference. `data` holds prod(shape) elements of in_dtype.
absl::StatusOr<Quantized4bit> Quantize4bitRef(const Fp4Spec& spec, DType in_dtype,
                                              const void* data,
                                              const std::vector<int64_t>& shape);

// Optimized (SIMD + threads); same bits as Quantize4bitRef.
absl::StatusOr<Quantized4bit> Quantize4bit(const Fp4Spec& spec, DType in_dtype,
                                           const void* data, const std::vector<int64_t>& shape,
                                           const QuantizeOptions& options = {});

// Chunk API. Quantizes elements [element_offset, element_offset + count) of a tensor of
// total_elements, read from `chunk`, into the whole-tensor outputs packed[(total+1)/2]
// and absmax[ceil(total/bs)]. REQUIRES (else InvalidArgument): element_offset % blocksize
// == 0 and (count % blocksize == 0 or element_offset + count == total_elements).
// spec.double_quant is ignored here (see Finish4bit).
absl::Status Quantize4bitChunk(const Fp4Spec& spec, DType in_dtype, const void* chunk,
                               int64_t element_offset, int64_t count, int64_t total_elements,
                               uint8_t* packed, float* absmax,
                               const QuantizeOptions& options = {});

// Builds a Quantized4bit from whole-tensor outputs of Quantize4bitChunk, nesting the
// absmax when spec.double_quant.
Quantized4bit Finish4bit(const Fp4Spec& spec, DType dtype, std::vector<int64_t> shape,
                         std::vector<uint8_t> packed, std::vector<float> absmax);

// Scalar reference dequantize into `out` (num_elements() values of out_dtype, F32/F16/BF16):
// out[i] = T(lut[code_i] * absmax[i / blocksize]).
absl::Status Dequantize4bitRef(const Quantized4bit& q, DType out_dtype, void* out);

// Optimized dequantize; same bits as Dequantize4bitRef.
absl::Status Dequantize4bit(const Quantized4bit& q, DType out_dtype, void* out,
                            const QuantizeOptions& options = {});

// The 16-entry fp32 code table of a 4-bit type (quant_map), index = code.
std::vector<float> QuantMap(QuantType type);

}  // namespace quant
}  // namespace loadstar
