// Launchers of the quantization kernels. Plain C++ over device pointers, returning
// cudaError_t (the launch error; execution errors surface at the next synchronization):
// no absl here, so quantize_kernels.cu stays free of heavy host headers. Each kernel calls
// the per-element functions of quant/blockwise_math.h, so its output bits equal the CPU
// reference's (tests/kernels/quantize_kernels_test.cc compares them).
//
// Layouts follow SPEC §6: 4-bit data is packed two codes a byte (element 2j high nibble),
// absmax one fp32 per block of `blocksize` consecutive elements of the flattened tensor;
// int8 is row-major with one fp32 scale (SCB) per row.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace loadstar::kernels {

// Element type of unquantized data on the device.
enum class GpuElement : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// 4-bit data type, numbered as quant::Fp4Kind.
enum class Gpu4bit : int { kFp4 = 1, kNf4 = 2 };

// True for the blocksizes the kernels take: powers of two in [32, 4096].
bool IsSupportedBlocksize(int64_t blocksize);

// Quantizes n elements of `in` (type `element`): writes ceil(n / blocksize) absmax values
// and (n + 1) / 2 packed bytes. REQUIRES: IsSupportedBlocksize(blocksize), n >= 1.
cudaError_t LaunchQuantize4bit(Gpu4bit kind, GpuElement element, const void* in, int64_t n,
                               int blocksize, float* absmax, uint8_t* packed,
                               cudaStream_t stream);

// Dequantizes n elements into `out` (type `element`): out[i] = T(lut[code] * absmax).
cudaError_t LaunchDequantize4bit(Gpu4bit kind, GpuElement element, const uint8_t* packed,
                                 const float* absmax, int64_t n, int blocksize, void* out,
                                 cudaStream_t stream);

// Double quant of an absmax vector of n values, given `offset` (their mean, computed by
// the caller with the CPU's summation so both paths agree): (absmax - offset) is
// quantized in blocks of 256 with the 256-entry dynamic `code` (device memory, sorted).
// Writes n uint8 codes and ceil(n / 256) nested absmax values.
cudaError_t LaunchQuantizeNestedAbsmax(const float* absmax, int64_t n, float offset,
                                       const float* code, uint8_t* q, float* nested_absmax,
                                       cudaStream_t stream);

// Rebuilds the absmax vector: code[q] * nested_absmax[i / 256] + offset.
cudaError_t LaunchDequantizeNestedAbsmax(const uint8_t* q, const float* nested_absmax,
                                         int64_t n, float offset, const float* code,
                                         float* absmax, cudaStream_t stream);

// Row-wise int8 (kInt8VectorQuant): values are cast to fp16 first (as quant/int8.cc);
// per row, scale[r] = max |x| over the elements with |x| < threshold (all of them when
// threshold == 0; 0 for none), q = round-half-even(x * 127/scale), and elements with
// |x| >= threshold (threshold > 0) get q = 0. Any GpuElement input.
cudaError_t LaunchQuantizeInt8Rows(GpuElement element, const void* in, int64_t rows,
                                   int64_t cols, float threshold, int8_t* q, float* row_scale,
                                   cudaStream_t stream);

// out[r, c] = T((q * scale[r]) * (1/127)) (bitsandbytes' int8_vectorwise_dequant).
cudaError_t LaunchDequantizeInt8Rows(const int8_t* q, const float* row_scale, int64_t rows,
                                     int64_t cols, GpuElement element, void* out,
                                     cudaStream_t stream);

// out[i] = To(float(in[i])): one RNE rounding, as quant's CastFloatTensor (the
// torch_dtype cast before quantizing). Any pair of GpuElement types; in != out.
cudaError_t LaunchCast(GpuElement from, const void* in, int64_t n, GpuElement to, void* out,
                       cudaStream_t stream);

}  // namespace loadstar::kernels
