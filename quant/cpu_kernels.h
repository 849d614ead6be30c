// CPU kernels behind quant/blockwise.h and quant/int8.h: a generic (portable scalar) set
// and AVX2 / AVX-512 sets, chosen once at run time with __builtin_cpu_supports. Only
// the SIMD translation units are compiled with target attributes, so the rest of the build
// stays generic. Every set produces exactly the bits of the *_ref functions (tested).
//
// Thread-safety: the kernels are pure functions of their arguments.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/dtype.h"
#include "quant/blockwise_math.h"

namespace loadstar {
namespace quant {
namespace internal {

enum class Isa { kGeneric, kAvx2, kAvx512 };

std::string_view IsaName(Isa isa);

struct CpuKernels {
  // Quantizes `num_blocks` full blocks of `blocksize` elements (input dtype F32/F16/BF16):
  // absmax[b] and blocksize/2 packed bytes per block.
  void (*quantize_4bit)(Fp4Kind kind, DType in_dtype, const void* in, int64_t num_blocks,
                        int blocksize, float* absmax, uint8_t* packed);
  // Dequantizes `num_blocks` full blocks to F32/F16/BF16.
  void (*dequantize_4bit)(Fp4Kind kind, const uint8_t* packed, const float* absmax,
                          int64_t num_blocks, int blocksize, DType out_dtype, void* out);
  // Quantizes one row of fp16 values with a nonzero finite SCB: out[i] = Int8Quantize(x, scale).
  void (*int8_row)(const Half* row, int64_t cols, float scale, int8_t* out);
  // max |x| of an fp16 row (as fp32).
  float (*half_row_absmax)(const Half* row, int64_t cols);
  // Casts n elements between F32/F16/BF16 with one RNE rounding (torch_dtype cast).
  void (*cast)(DType from, const void* in, int64_t n, DType to, void* out);
  // 8-bit dynamic codes (double quant's absmax nesting): out[i] = QuantizeDynamic(code,
  // x[i] * scale), with `midpoints` as DynamicCode takes them.
  void (*dynamic_codes)(const float* code, const float* midpoints, const float* x, int64_t n,
                        float scale, uint8_t* out);
};

// QuantizeDynamic(code, v) for a sorted 256-entry `code`, given midpoints[k] = (code[k] +
// code[k+1]) * 0.5f (as dQuantize computes them) and midpoints[255] = +inf. dQuantize ends
// next to v's interval and picks the upper/lower neighbour by strict midpoint comparisons,
// so its result is #{k : midpoints[k] < v} except when v equals a midpoint, where the
// search path decides: defer to the exact search there. The count is a branch-free binary
// search (the SIMD sets run it on 8 / 16 values at once with gathers).
inline uint8_t DynamicCode(const float* code, const float* midpoints, float v) {
  int idx = 0;
  for (int step = 128; step >= 1; step >>= 1) idx += (midpoints[idx + step - 1] < v) ? step : 0;
  if (midpoints[idx] == v) return QuantizeDynamic(code, v);
  return static_cast<uint8_t>(idx);
}

// True if this CPU and build can run `isa`.
bool IsaSupported(Isa isa);
// The kernels of `isa`. REQUIRES: IsaSupported(isa).
const CpuKernels& KernelsFor(Isa isa);
// The best supported set (AVX-512 > AVX2 > generic); LOADSTAR_QUANT_ISA=generic|avx2|avx512
// in the environment caps it (for benchmarks and debugging).
Isa BestIsa();
const CpuKernels& BestKernels();

// The scalar cast (also the SIMD sets' tail handler).
void GenericCast(DType from, const void* in, int64_t n, DType to, void* out);

// Provided by cpu_kernels_generic.cc / cpu_kernels_avx2.cc / cpu_kernels_avx512.cc.
const CpuKernels& GenericKernels();
const CpuKernels& Avx2Kernels();
const CpuKernels& Avx512Kernels();

// Runs fn(begin, end) over [0, n) split into at most `threads` contiguous ranges of
// multiples of `grain` (the last range takes the rest); threads <= 1 runs inline.
// threads == 0 means std::thread::hardware_concurrency().
void ParallelFor(int64_t n, int64_t grain, int threads,
                 void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx);

template <typename F>
void ParallelFor(int64_t n, int64_t grain, int threads, F&& f) {
  ParallelFor(
      n, grain, threads,
      [](void* ctx, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace internal
}  // namespace quant
}  // namespace loadstar
