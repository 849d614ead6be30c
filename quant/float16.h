// Bit-exact IEEE binary16 (fp16) and bfloat16 <-> fp32 conversions, round-to-nearest-even,
// shared by host code and CUDA kernels (LOADSTAR_HOST_DEVICE). They produce the same bits
// as __float2half_rn / __float2bfloat16_rn / torch's .to(float16|bfloat16): NaN stays NaN
// (quiet, sign kept), overflow rounds to +-inf, subnormals are kept (no flush to zero).
//
// Device code uses the hardware conversions (cvt.rn.f16.f32 / cvt.rn.bf16.f32 / cvt.f32.f16;
// sm_80+), which give the same bits for every non-NaN value; a NaN stays a NaN but its
// payload may differ (the hardware returns its canonical NaN), as torch's GPU casts do.
// tests/quant/golden_test.cc checks the host functions against torch; tests/kernels
// compares the kernels' bytes with the host's.
//
// Half and BFloat16 are plain 16-bit storage types with the layout of __half /
// __nv_bfloat16 / torch's storage, so device code may reinterpret pointers to those.
#pragma once

#include <cstdint>

#include "quant/host_device.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace loadstar {

struct Half {
  uint16_t bits;  // IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits
};
static_assert(sizeof(Half) == 2, "Half must be 2 bytes");

struct BFloat16 {
  uint16_t bits;  // upper 16 bits of an IEEE binary32
};
static_assert(sizeof(BFloat16) == 2, "BFloat16 must be 2 bytes");

LOADSTAR_HOST_DEVICE uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

LOADSTAR_HOST_DEVICE float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// fp16 bits -> fp32 (exact).
LOADSTAR_HOST_DEVICE float HalfBitsToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1Fu) {  // inf / NaN (payload kept, as the hardware does)
    return BitsToFloat(sign | 0x7F800000u | (mant << 13));
  }
  if (exp == 0) {
    if (mant == 0) return BitsToFloat(sign);  // +-0
    // Subnormal: normalize. value = mant * 2^-24.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    return BitsToFloat(sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13));
  }
  return BitsToFloat(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
#endif
}

// fp32 -> fp16 bits, round to nearest even.
LOADSTAR_HOST_DEVICE uint16_t FloatToHalfBits(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN
    if (abs == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));  // quiet NaN
  }
  if (abs >= 0x477FF000u) {  // >= 65520: rounds to inf
    return static_cast<uint16_t>(sign | 0x7C00u);
  }
  if (abs < 0x38800000u) {  // below the smallest fp16 normal (2^-14): subnormal or zero
    if (abs < 0x33000000u) return sign;  // <= 2^-25: rounds to zero (tie at 2^-25 -> even 0)
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    // value = mant * 2^(exp-150); fp16 subnormal unit is 2^-24 -> shift = 126 - exp.
    const uint32_t shift = 126u - exp;  // 14..24
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias and round the 13 dropped bits; a carry into the exponent is correct.
  uint32_t h = ((abs >> 13) - ((127u - 15u) << 10));
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
#endif
}

// bf16 bits -> fp32 (exact).
LOADSTAR_HOST_DEVICE float BFloat16BitsToFloat(uint16_t b) {
  return BitsToFloat(static_cast<uint32_t>(b) << 16);
}

// fp32 -> bf16 bits, round to nearest even; NaN becomes a quiet NaN with its sign.
LOADSTAR_HOST_DEVICE uint16_t FloatToBFloat16Bits(float f) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  const uint32_t u = FloatBits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  const uint32_t rounding_bias = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
#endif
}

LOADSTAR_HOST_DEVICE float ToFloat(float x) { return x; }
LOADSTAR_HOST_DEVICE float ToFloat(Half x) { return HalfBitsToFloat(x.bits); }
LOADSTAR_HOST_DEVICE float ToFloat(BFloat16 x) { return BFloat16BitsToFloat(x.bits); }

// FromFloat<T>(f): one rounding (RNE) from fp32 to T.
template <typename T>
LOADSTAR_HOST_DEVICE T FromFloat(float f);
template <>
LOADSTAR_HOST_DEVICE float FromFloat<float>(float f) {
  return f;
}
template <>
LOADSTAR_HOST_DEVICE Half FromFloat<Half>(float f) {
  return Half{FloatToHalfBits(f)};
}
template <>
LOADSTAR_HOST_DEVICE BFloat16 FromFloat<BFloat16>(float f) {
  return BFloat16{FloatToBFloat16Bits(f)};
}

}  // namespace loadstar
