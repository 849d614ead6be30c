// Launchers of the small element-wise kernels around the quantized linear layers' GEMMs
// (kernels/quantized_linear_gpu.h). Plain C++ over device pointers returning cudaError_t;
// the math per element is quant/ 's (Int8Dequantize, fp16 rounding), so results match
// quant/quantized_linear.cc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "quant/float16.h"

namespace loadstar::kernels {

// flags[c] = 1 for every column c of x [m, k] holding an |x| >= threshold. REQUIRES:
// flags zeroed by the caller.
cudaError_t LaunchMarkOutlierColumns(const Half* x, int64_t m, int64_t k, float threshold,
                                     int32_t* flags, cudaStream_t stream);

// q[:, c] = 0 for every flagged column (q is [m, k] int8).
cudaError_t LaunchZeroFlaggedColumns(int8_t* q, int64_t m, int64_t k, const int32_t* flags,
                                     cudaStream_t stream);

// The operands of the fp16 outlier GEMM, with every unflagged column zeroed so that a
// full-k GEMM sums only the outlier columns: x_out = x masked; w_out[j, c] =
// fp16(Int8Dequantize(w_q[j, c], scb[j])) masked (w_q is [n, k]).
cudaError_t LaunchOutlierOperands(const Half* x, int64_t m, int64_t k, const int8_t* w_q,
                                  const float* scb, int64_t n, const int32_t* flags,
                                  Half* x_out, Half* w_out, cudaStream_t stream);

// y[r, j] = fp16(((float(acc[r, j]) * (1/127²)) * row_scale[r]) * scb[j]); acc and y are
// row-major [m, n].
cudaError_t LaunchInt8MatmulDequant(const int32_t* acc, const float* row_scale,
                                    const float* scb, int64_t m, int64_t n, Half* y,
                                    cudaStream_t stream);

}  // namespace loadstar::kernels
