// Dequantization of ggml block types (quant/ggml_types.h) to fp32 on the CPU.
//
//   DequantizeGgmlRef   the scalar specification: loops over the HOST_DEVICE block
//                       functions of quant/ggml_blocks.h (bit-exact with gguf-py's numpy
//                       `dequantize`, tested against it).
//   DequantizeGgml      the same bits from the best kernel set of this CPU (AVX2; the
//                       scalar reference elsewhere), optionally over threads.
//   DequantizeGgmlTo    DequantizeGgml then one RNE rounding to F16/BF16 (or none for F32),
//                       as transformers does (dequantize to fp32, then .to(torch_dtype)).
//
// `in` holds `blocks` whole blocks (GgmlInfo(type).block_bytes each, any alignment);
// `out` receives blocks * block_elems values.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "base/dtype.h"
#include "quant/cpu_kernels.h"
#include "quant/ggml_types.h"

namespace loadstar::quant {

void DequantizeGgmlRef(GgmlType type, const uint8_t* in, int64_t blocks, float* out);

// `threads` as internal::ParallelFor (0 = all cores, 1 = inline).
void DequantizeGgml(GgmlType type, const uint8_t* in, int64_t blocks, float* out,
                    int threads = 1);

// InvalidArgument for an out_dtype other than F32/F16/BF16.
absl::Status DequantizeGgmlTo(GgmlType type, const uint8_t* in, int64_t blocks,
                              DType out_dtype, void* out, int threads = 1);

namespace internal {
using GgmlDequantizeFn = void (*)(GgmlType type, const uint8_t* in, int64_t blocks,
                                  float* out);
// The kernel of `isa` (AVX-512 machines use the AVX2 one). REQUIRES: IsaSupported(isa).
GgmlDequantizeFn GgmlDequantizeKernel(Isa isa);
// Provided by ggml_dequant_avx2.cc.
void DequantizeGgmlAvx2(GgmlType type, const uint8_t* in, int64_t blocks, float* out);
}  // namespace internal

}  // namespace loadstar::quant
