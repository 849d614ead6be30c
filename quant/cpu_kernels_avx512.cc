// AVX-512 (F, BW, VL, DQ) kernels. Same contract as the AVX2 set (see there); 16 lanes and
// a single 16-entry permute per binary-search level.
// GCC 12 flags its own _mm512_undefined_* helpers as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cfloat>

#include "quant/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOADSTAR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

namespace loadstar {
namespace quant {
namespace internal {
namespace {

inline DType DTypeOf(const float*) { return DType::kF32; }
inline DType DTypeOf(const Half*) { return DType::kF16; }
inline DType DTypeOf(const BFloat16*) { return DType::kBF16; }
inline DType DTypeOf(float*) { return DType::kF32; }
inline DType DTypeOf(Half*) { return DType::kF16; }
inline DType DTypeOf(BFloat16*) { return DType::kBF16; }

constexpr float kNf4Thresholds[16] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,
    -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
    -0.045525018125772476f, 0.03979014977812767f,  0.1202552504837513f,
    0.2035212516784668f,   0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
    FLT_MAX};
constexpr float kFp4Thresholds[16] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                      0.4166667f,  0.583333f,  0.8333333f,  FLT_MAX,
                                      FLT_MAX,     FLT_MAX,    FLT_MAX,     FLT_MAX,
                                      FLT_MAX,     FLT_MAX,    FLT_MAX,     FLT_MAX};
constexpr int kFp4RankToCode[16] = {0, 1, 6, 7, 4, 5, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0};

LOADSTAR_AVX512 inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
LOADSTAR_AVX512 inline __m512 Load16(const Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
LOADSTAR_AVX512 inline __m512 Load16(const BFloat16* p) {
  const __m512i w =
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

LOADSTAR_AVX512 inline __m512 Abs(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF)));
}

template <typename T>
LOADSTAR_AVX512 inline float Absmax16(const T* x, int64_t n) {
  __m512 m = _mm512_set1_ps(kMinusFltMax);
  for (int64_t i = 0; i < n; i += 16) m = _mm512_max_ps(Abs(Load16(x + i)), m);
  return _mm512_reduce_max_ps(m);
}

LOADSTAR_AVX512 inline __m512i Nf4Codes(__m512 x, __m512 thr) {
  __m512i c = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step >>= 1) {
    const __m512i idx = _mm512_add_epi32(c, _mm512_set1_epi32(step - 1));
    const __mmask16 m = _mm512_cmp_ps_mask(x, _mm512_permutexvar_ps(idx, thr), _CMP_GT_OQ);
    c = _mm512_mask_add_epi32(c, m, c, _mm512_set1_epi32(step));
  }
  return c;
}

LOADSTAR_AVX512 inline __m512i Fp4Codes(__m512 x, __m512 thr, __m512i rank_to_code) {
  const __m512 a = Abs(x);
  __m512i c = _mm512_setzero_si512();
  for (int step = 4; step >= 1; step >>= 1) {
    const __m512i idx = _mm512_add_epi32(c, _mm512_set1_epi32(step - 1));
    const __mmask16 m = _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(idx, thr), _CMP_GT_OQ);
    c = _mm512_mask_add_epi32(c, m, c, _mm512_set1_epi32(step));
  }
  c = _mm512_permutexvar_epi32(c, rank_to_code);
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_or_epi32(c, neg, c, _mm512_set1_epi32(8));
}

// 32 codes -> 16 packed bytes (element 2j in the high nibble).
LOADSTAR_AVX512 inline void Pack32(__m512i c0, __m512i c1, uint8_t* out) {
  const __m128i b0 = _mm512_cvtepi32_epi8(c0);
  const __m128i b1 = _mm512_cvtepi32_epi8(c1);
  const __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(b0), b1, 1);
  const __m256i hi = _mm256_and_si256(_mm256_slli_epi16(w, 4), _mm256_set1_epi16(0x00F0));
  const __m256i lo = _mm256_srli_epi16(w, 8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm256_cvtepi16_epi8(_mm256_or_si256(hi, lo)));
}

template <Fp4Kind kKind, typename T>
LOADSTAR_AVX512 void QuantizeBlocks(const T* in, int64_t num_blocks, int blocksize,
                                    float* absmax, uint8_t* packed) {
  const __m512 thr = _mm512_loadu_ps(kKind == Fp4Kind::kNf4 ? kNf4Thresholds : kFp4Thresholds);
  const __m512i rank_to_code = _mm512_loadu_si512(kFp4RankToCode);
  // Blocks go in groups of 16: all absmax first, then the reciprocals, then the codes, so
  // the long per-block chain (reduce -> divide -> encode) of one block does not serialize
  // the next; small blocksizes (32, 64) are latency-bound otherwise.
  constexpr int kGroup = 16;
  float inv_group[kGroup];
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int64_t g = b % kGroup;
    if (g == 0) {
      const int64_t group_end = b + kGroup < num_blocks ? b + kGroup : num_blocks;
      for (int64_t j = b; j < group_end; ++j) absmax[j] = Absmax16(in + j * blocksize, blocksize);
      for (int64_t j = b; j < group_end; ++j) inv_group[j - b] = 1.0f / absmax[j];
    }
    const T* x = in + b * blocksize;
    const __m512 inv = _mm512_set1_ps(inv_group[g]);
    uint8_t* out = packed + b * (blocksize / 2);
    for (int i = 0; i < blocksize; i += 32) {
      const __m512 x0 = _mm512_mul_ps(Load16(x + i), inv);
      const __m512 x1 = _mm512_mul_ps(Load16(x + i + 16), inv);
      if (kKind == Fp4Kind::kNf4) {
        Pack32(Nf4Codes(x0, thr), Nf4Codes(x1, thr), out + i / 2);
      } else {
        Pack32(Fp4Codes(x0, thr, rank_to_code), Fp4Codes(x1, thr, rank_to_code), out + i / 2);
      }
    }
  }
}

template <Fp4Kind kKind>
LOADSTAR_AVX512 void QuantizeKind(DType in_dtype, const void* in, int64_t num_blocks,
                                  int blocksize, float* absmax, uint8_t* packed) {
  switch (in_dtype) {
    case DType::kF16:
      return QuantizeBlocks<kKind>(static_cast<const Half*>(in), num_blocks, blocksize, absmax,
                                   packed);
    case DType::kBF16:
      return QuantizeBlocks<kKind>(static_cast<const BFloat16*>(in), num_blocks, blocksize,
                                   absmax, packed);
    default:
      return QuantizeBlocks<kKind>(static_cast<const float*>(in), num_blocks, blocksize,
                                   absmax, packed);
  }
}

LOADSTAR_AVX512 void Avx512Quantize4bit(Fp4Kind kind, DType in_dtype, const void* in,
                                        int64_t num_blocks, int blocksize, float* absmax,
                                        uint8_t* packed) {
  if (kind == Fp4Kind::kNf4) {
    QuantizeKind<Fp4Kind::kNf4>(in_dtype, in, num_blocks, blocksize, absmax, packed);
  } else {
    QuantizeKind<Fp4Kind::kFp4>(in_dtype, in, num_blocks, blocksize, absmax, packed);
  }
}

LOADSTAR_AVX512 inline void Store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
LOADSTAR_AVX512 inline void Store16(Half* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
LOADSTAR_AVX512 inline void Store16(BFloat16* p, __m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i bias = _mm512_add_epi32(
      _mm512_set1_epi32(0x7FFF), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  const __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  const __mmask16 ord = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(nan, ord, r)));
}

template <typename T>
LOADSTAR_AVX512 void DequantizeBlocks(const float* lut16, const uint8_t* packed,
                                      const float* absmax, int64_t num_blocks, int blocksize,
                                      T* out) {
  const __m512 lut = _mm512_loadu_ps(lut16);
  const __m128i nib = _mm_set1_epi8(0x0F);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const __m512 am = _mm512_set1_ps(absmax[b]);
    const uint8_t* src = packed + b * (blocksize / 2);
    T* dst = out + b * blocksize;
    for (int i = 0; i < blocksize; i += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i / 2));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
      const __m128i lo = _mm_and_si128(bytes, nib);
      const __m512i i0 = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
      const __m512i i1 = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo));
      Store16(dst + i, _mm512_mul_ps(_mm512_permutexvar_ps(i0, lut), am));
      Store16(dst + i + 16, _mm512_mul_ps(_mm512_permutexvar_ps(i1, lut), am));
    }
  }
}

LOADSTAR_AVX512 void Avx512Dequantize4bit(Fp4Kind kind, const uint8_t* packed,
                                          const float* absmax, int64_t num_blocks,
                                          int blocksize, DType out_dtype, void* out) {
  float lut[16];
  for (int i = 0; i < 16; ++i) {
    lut[i] = kind == Fp4Kind::kNf4 ? Nf4Value(static_cast<uint8_t>(i))
                                   : Fp4Value(static_cast<uint8_t>(i));
  }
  switch (out_dtype) {
    case DType::kF16:
      return DequantizeBlocks(lut, packed, absmax, num_blocks, blocksize,
                              static_cast<Half*>(out));
    case DType::kBF16:
      return DequantizeBlocks(lut, packed, absmax, num_blocks, blocksize,
                              static_cast<BFloat16*>(out));
    default:
      return DequantizeBlocks(lut, packed, absmax, num_blocks, blocksize,
                              static_cast<float*>(out));
  }
}

LOADSTAR_AVX512 float Avx512HalfRowAbsmax(const Half* row, int64_t cols) {
  __m512 m = _mm512_set1_ps(kMinusFltMax);
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) m = _mm512_max_ps(Abs(Load16(row + i)), m);
  float r = _mm512_reduce_max_ps(m);
  for (; i < cols; ++i) r = fmaxf(r, fabsf(ToFloat(row[i])));
  return r;
}

LOADSTAR_AVX512 void Avx512Int8Row(const Half* row, int64_t cols, float scale, int8_t* out) {
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    __m512 v = _mm512_mul_ps(Load16(row + i), s);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);  // NaN -> 0
    const __m512i q = _mm512_cvtps_epi32(v);                           // nearest even
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtsepi32_epi8(q));
  }
  for (; i < cols; ++i) out[i] = Int8Quantize(ToFloat(row[i]), scale);
}

template <typename From, typename To>
LOADSTAR_AVX512 void CastTyped(const From* in, int64_t n, To* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) Store16(out + i, Load16(in + i));
  GenericCast(DTypeOf(in), in + i, n - i, DTypeOf(out), out + i);
}

template <typename From>
LOADSTAR_AVX512 void CastFrom(const From* in, int64_t n, DType to, void* out) {
  switch (to) {
    case DType::kF16:
      return CastTyped(in, n, static_cast<Half*>(out));
    case DType::kBF16:
      return CastTyped(in, n, static_cast<BFloat16*>(out));
    default:
      return CastTyped(in, n, static_cast<float*>(out));
  }
}

LOADSTAR_AVX512 void Avx512Cast(DType from, const void* in, int64_t n, DType to, void* out) {
  switch (from) {
    case DType::kF16:
      return CastFrom(static_cast<const Half*>(in), n, to, out);
    case DType::kBF16:
      return CastFrom(static_cast<const BFloat16*>(in), n, to, out);
    default:
      return CastFrom(static_cast<const float*>(in), n, to, out);
  }
}

// DynamicCode on 16 values at once (as Avx2DynamicCodes, one gather per search step).
LOADSTAR_AVX512 void Avx512DynamicCodes(const float* code, const float* midpoints,
                                        const float* x, int64_t n, float scale, uint8_t* out) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512 first = _mm512_set1_ps(midpoints[127]);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), s);
    __m512i idx = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(first, v, _CMP_LT_OQ),
                                         _mm512_set1_epi32(128));
    for (int step = 64; step >= 1; step >>= 1) {
      const __m512i probe = _mm512_add_epi32(idx, _mm512_set1_epi32(step - 1));
      const __m512 m = _mm512_i32gather_ps(probe, midpoints, 4);
      idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(m, v, _CMP_LT_OQ), idx,
                                  _mm512_set1_epi32(step));
    }
    const __m512 at = _mm512_i32gather_ps(idx, midpoints, 4);
    const __mmask16 ties = _mm512_cmp_ps_mask(at, v, _CMP_EQ_OQ);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(idx));
    if (ties != 0) {
      for (int k = 0; k < 16; ++k) {
        if (ties & (1u << k)) out[i + k] = QuantizeDynamic(code, x[i + k] * scale);
      }
    }
  }
  for (; i < n; ++i) out[i] = DynamicCode(code, midpoints, x[i] * scale);
}

}  // namespace

const CpuKernels& Avx512Kernels() {
  static const CpuKernels k = {Avx512Quantize4bit,  Avx512Dequantize4bit, Avx512Int8Row,
                               Avx512HalfRowAbsmax, Avx512Cast,           Avx512DynamicCodes};
  return k;
}

}  // namespace internal
}  // namespace quant
}  // namespace loadstar

#else

namespace loadstar {
namespace quant {
namespace internal {
const CpuKernels& Avx512Kernels() { return GenericKernels(); }
}  // namespace internal
}  // namespace quant
}  // namespace loadstar

#endif
