// Launcher of the ggml block dequantization kernel (GGUF tensors on the GPU). Plain C++
// over device pointers returning cudaError_t, like quantize_kernels.h. The kernel calls
// the HOST_DEVICE per-block functions of quant/ggml_blocks.h, the same math the CPU
// reference (quant/ggml_dequant.h DequantizeGgmlRef) runs, so the bits agree
// (tests/kernels/ggml_dequant_gpu_test.cc compares them).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "quant/ggml_types.h"

namespace loadstar::kernels {

// Dequantizes `blocks` whole blocks of `type` (GgmlInfo(type).block_bytes each) at `in`
// into blocks * block_elems fp32 values at `out`. Both pointers are device memory.
cudaError_t LaunchDequantizeGgml(quant::GgmlType type, const uint8_t* in, int64_t blocks,
                                 float* out, cudaStream_t stream);

}  // namespace loadstar::kernels
