// Per-element and per-block quantization math of bitsandbytes' CUDA kernels
// (csrc/kernels.cu / csrc/cuda/blockwise_quantization.cu: kQuantizeBlockwise,
// kDequantizeBlockwise, dQuantizeNF4, dQuantizeFP4, dQuantize; csrc/cuda/int8.cu:
// kInt8VectorQuant), written once for both the host (quant/) and nvcc (kernels/).
// The functions are the specification of SPEC §6; every optimized path (SIMD, CUDA) must
// produce the same bits. No std library, no absl, no exceptions: device-safe plain C++.
//
// Semantics that matter for bit-exactness:
//  - absmax = max |x| over the block's real elements, in fp32 (fmaxf/fabsf from -FLT_MAX).
//  - x_n = float(x) * (1.0f / absmax): reciprocal first, then one multiply.
//  - all-zero block: 1/0 = inf, 0 * inf = NaN, NaN fails every `>` -> NF4 code 0,
//    FP4 code 0 (the dequantized values are then lut[0] * 0 = -0.0 for NF4, +0.0 for FP4).
//  - a tail block shorter than the blocksize pads with 0 (packed as the code of 0 * inv);
//    its absmax covers only its real elements.
//  - packing: element 2j -> high nibble, element 2j+1 -> low nibble of byte j.
//  - FP4 sign: `x < 0` sets bit 3 (so -0.0 and NaN get sign 0).
//  - dequantize: T(lut[code] * absmax), computed in fp32 and rounded once to T.
#pragma once

#include <math.h>

#include <cstdint>

#include "quant/float16.h"
#include "quant/host_device.h"

namespace loadstar {
namespace quant {

// Quantized 4-bit data types, numbered as bitsandbytes' DATA_TYPE template argument.
enum class Fp4Kind : int { kFp4 = 1, kNf4 = 2 };

// The largest finite float; the CUDA kernel starts its absmax reduction here.
constexpr float kMinusFltMax = -3.40282346638528859811704183484516925e+38f;

// NF4 code -> value (SPEC §6 table, code = index) and the FP4 magnitudes by the low 3
// bits: one list each, for the host's array and the device's __constant__ copy.
#define LOADSTAR_NF4_TABLE                                                                  \
  {-1.0f,                 -0.6961928009986877f,  -0.5250730514526367f, -0.39491748809814453f, \
   -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,                 \
   0.07958029955625534f,  0.16093020141124725f,  0.24611230194568634f, 0.33791524171829224f,  \
   0.44070982933044434f,  0.5626170039176941f,   0.7229568362236023f,  1.0f}
#define LOADSTAR_FP4_MAGNITUDES \
  {0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f}

#if defined(__CUDACC__)
// Device code reads the tables from __constant__ memory (cached, broadcast when a warp's
// lanes share a code) instead of building a local array, which nvcc places in per-thread
// local memory because the index is not a compile-time constant. One copy per .cu file.
static __constant__ float kNf4TableDevice[16] = LOADSTAR_NF4_TABLE;
static __constant__ float kFp4MagnitudeDevice[8] = LOADSTAR_FP4_MAGNITUDES;
#endif

LOADSTAR_HOST_DEVICE float Nf4Value(uint8_t code) {
#if defined(__CUDA_ARCH__)
  return kNf4TableDevice[code & 0x0F];
#else
  const float table[16] = LOADSTAR_NF4_TABLE;
  return table[code & 0x0F];
#endif
}

// FP4 code -> value: magnitude by the low 3 bits, sign by bit 3 (bitsandbytes multiplies
// the magnitude by 1 - 2*sign, which is exact).
LOADSTAR_HOST_DEVICE float Fp4Value(uint8_t code) {
#if defined(__CUDA_ARCH__)
  const float* magnitude = kFp4MagnitudeDevice;
#else
  const float magnitude[8] = LOADSTAR_FP4_MAGNITUDES;
#endif
  const float sign = 1.0f - 2.0f * static_cast<float>((code & 0x08) >> 3);
  return magnitude[code & 0x07] * sign;
}
#undef LOADSTAR_NF4_TABLE
#undef LOADSTAR_FP4_MAGNITUDES

// NF4 encode of a normalized value: bitsandbytes' strict-`>` decision tree.
LOADSTAR_HOST_DEVICE uint8_t EncodeNf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
      return x > 0.5016634166240692f ? 13 : 12;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
    return x > 0.1202552504837513f ? 9 : 8;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
    return x > -0.23460740596055984f ? 5 : 4;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
  return x > -0.8480964004993439f ? 1 : 0;
}

// FP4 encode of a normalized value: sign from `x < 0`, then the tree on |x|.
LOADSTAR_HOST_DEVICE uint8_t EncodeFp4(float x) {
  const uint8_t sign = x < 0.0f ? 0x08 : 0x00;
  x = fabsf(x);
  uint8_t code;
  if (x > 0.29166667f) {
    if (x > 0.583333f) {
      code = x > 0.8333333f ? 3 : 2;
    } else {
      code = x > 0.4166667f ? 5 : 4;
    }
  } else if (x > 0.0859375f) {
    code = x > 0.20833333f ? 7 : 6;
  } else {
    code = x > 0.00260417f ? 1 : 0;
  }
  return static_cast<uint8_t>(code + sign);
}

template <Fp4Kind kKind>
LOADSTAR_HOST_DEVICE uint8_t Encode4bit(float x) {
  return kKind == Fp4Kind::kNf4 ? EncodeNf4(x) : EncodeFp4(x);
}

template <Fp4Kind kKind>
LOADSTAR_HOST_DEVICE float Decode4bit(uint8_t code) {
  return kKind == Fp4Kind::kNf4 ? Nf4Value(code) : Fp4Value(code);
}

// absmax of n (>= 1) elements, fp32, as the CUDA kernel's fmaxf reduction (NaNs ignored).
template <typename T>
LOADSTAR_HOST_DEVICE float BlockAbsmax(const T* x, int64_t n) {
  float m = kMinusFltMax;
  for (int64_t i = 0; i < n; ++i) m = fmaxf(m, fabsf(ToFloat(x[i])));
  return m;
}

// Quantizes one block of n (1..blocksize) elements to 4 bits: writes absmax and
// (n + 1) / 2 packed bytes. Blocks are independent, so any block of a tensor can be
// encoded on its own (chunked/streamed quantization, one CUDA thread block per block).
template <Fp4Kind kKind, typename T>
LOADSTAR_HOST_DEVICE void Quantize4bitBlock(const T* x, int64_t n, float* absmax_out,
                                            uint8_t* packed) {
  const float absmax = BlockAbsmax(x, n);
  *absmax_out = absmax;
  const float inv = 1.0f / absmax;
  int64_t j = 0;
  for (; j + 1 < n; j += 2) {
    const uint8_t hi = Encode4bit<kKind>(ToFloat(x[j]) * inv);
    const uint8_t lo = Encode4bit<kKind>(ToFloat(x[j + 1]) * inv);
    packed[j / 2] = static_cast<uint8_t>((hi << 4) | lo);
  }
  if (j < n) {  // odd tail: the pad element is 0 (times inv: NaN for an all-zero block)
    const uint8_t hi = Encode4bit<kKind>(ToFloat(x[j]) * inv);
    const uint8_t lo = Encode4bit<kKind>(0.0f * inv);
    packed[j / 2] = static_cast<uint8_t>((hi << 4) | lo);
  }
}

// Dequantizes one block of n elements: out[i] = T(lut[code_i] * absmax).
template <Fp4Kind kKind, typename T>
LOADSTAR_HOST_DEVICE void Dequantize4bitBlock(const uint8_t* packed, int64_t n, float absmax,
                                              T* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t byte = packed[i / 2];
    const uint8_t code = (i & 1) ? (byte & 0x0F) : (byte >> 4);
    out[i] = FromFloat<T>(LOADSTAR_FMUL_RN(Decode4bit<kKind>(code), absmax));
  }
}

// ---- 8-bit blockwise with a 256-entry code (double quant of the absmax vector) ----

// Nearest code value by bitsandbytes' binary search (dQuantize<0>): `code` is sorted
// ascending, 256 fp32 values in [-1, 1]. Ties at a midpoint go to the inner pivot.
LOADSTAR_HOST_DEVICE uint8_t QuantizeDynamic(const float* code, float x) {
  int pivot = 127;
  int upper_pivot = 255;
  int lower_pivot = 0;
  float lower = -1.0f;
  float upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    // Written with selects rather than if/else (same result) so the host compiler can
    // use conditional moves: the branch is unpredictable.
    const bool gt = x > val;
    lower_pivot = gt ? pivot : lower_pivot;
    lower = gt ? val : lower;
    upper_pivot = gt ? upper_pivot : pivot;
    upper = gt ? upper : val;
    pivot = gt ? pivot + i : pivot - i;
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return static_cast<uint8_t>(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = (lower + val) * 0.5f;
  return static_cast<uint8_t>(x < midpoint ? lower_pivot : pivot);
}

// One 8-bit block (kQuantizeBlockwise<General8bit>): absmax, then code index of x * (1/absmax).
LOADSTAR_HOST_DEVICE void Quantize8bitBlock(const float* code, const float* x, int64_t n,
                                            float* absmax_out, uint8_t* q) {
  const float absmax = BlockAbsmax(x, n);
  *absmax_out = absmax;
  const float inv = 1.0f / absmax;
  for (int64_t i = 0; i < n; ++i) q[i] = QuantizeDynamic(code, x[i] * inv);
}

// Double-quant absmax rebuild: code[q] * nested_absmax (one rounding, the kernel) then
// + offset (a second rounding, torch). Never fused.
LOADSTAR_HOST_DEVICE float DequantizeNestedAbsmax(const float* code, uint8_t q,
                                                  float nested_absmax, float offset) {
  const float scaled = LOADSTAR_FMUL_RN(code[q], nested_absmax);
  return LOADSTAR_FADD_RN(scaled, offset);
}

// ---- int8 row-wise (LLM.int8 weights, kInt8VectorQuant with threshold 0) ----

// Row scale 127 / SCB. The CUDA kernel uses __fdividef (approximate, <= 2 ulp); this is
// the correctly rounded quotient, so a code can differ where x*scale lies within ~2 ulp
// of a .5 tie (documented in quant/int8.h).
LOADSTAR_HOST_DEVICE float Int8RowScale(float scb) { return 127.0f / scb; }

// q = round-half-even(x * scale) (__float2int_rn); NaN (all-zero row: 0 * inf) -> 0.
LOADSTAR_HOST_DEVICE int8_t Int8Quantize(float x, float scale) {
  const float v = x * scale;
  if (!(v == v)) return 0;
  float r = rintf(v);  // default rounding mode: nearest even
  if (r > 127.0f) r = 127.0f;
  if (r < -128.0f) r = -128.0f;
  return static_cast<int8_t>(r);
}

// Dequantized int8 weight as bitsandbytes' int8_vectorwise_dequant: (q * SCB) * (1/127)
// with the constant 7.874015718698502e-3 in fp32, two roundings.
LOADSTAR_HOST_DEVICE float Int8Dequantize(int8_t q, float scb) {
  const float scaled = LOADSTAR_FMUL_RN(static_cast<float>(q), scb);
  return LOADSTAR_FMUL_RN(scaled, 7.874015718698502e-3f);
}

}  // namespace quant
}  // namespace loadstar
