// AVX2 + F16C kernels. Only this translation unit's functions carry the avx2 target
// attribute; they run only after IsaSupported(kAvx2). Bit-exactness with the scalar
// math comes from: exact fp16/bf16 -> fp32 widening, the same single fp32 multiply by
// 1/absmax, and codes computed as a binary search over the *same* sorted thresholds the
// strict-`>` trees use (ordered compares are false on NaN, giving code 0 like the trees).
#include <immintrin.h>

#include <cfloat>
#include <cstring>

#include "quant/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOADSTAR_AVX2 __attribute__((target("avx2,fma,f16c")))

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

// Sorted decision thresholds of the NF4 tree (t[k] splits code k from k+1), padded.
constexpr float kNf4Thresholds[16] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,
    -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
    -0.045525018125772476f, 0.03979014977812767f,  0.1202552504837513f,
    0.2035212516784668f,   0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
    FLT_MAX};
// Sorted thresholds of the FP4 magnitude tree, and magnitude rank -> code (low 3 bits).
constexpr float kFp4Thresholds[8] = {0.00260417f, 0.0859375f,  0.20833333f, 0.29166667f,
                                     0.4166667f,  0.583333f,   0.8333333f,  FLT_MAX};
constexpr int kFp4RankToCode[8] = {0, 1, 6, 7, 4, 5, 2, 3};

LOADSTAR_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
LOADSTAR_AVX2 inline __m256 Load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LOADSTAR_AVX2 inline __m256 Load8(const BFloat16* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

LOADSTAR_AVX2 inline __m256 Abs(__m256 x) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

LOADSTAR_AVX2 inline float HMax(__m256 m) {
  __m128 v = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  v = _mm_max_ps(v, _mm_movehl_ps(v, v));
  v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}

template <typename T>
LOADSTAR_AVX2 inline float AbsmaxAvx2(const T* x, int64_t n) {
  __m256 m = _mm256_set1_ps(kMinusFltMax);
  for (int64_t i = 0; i < n; i += 8) m = _mm256_max_ps(Abs(Load8(x + i)), m);  // NaN -> keep m
  return HMax(m);
}

struct Nf4Tables {
  __m256 t7, t3, t11, lvl2, lvl1;
};

LOADSTAR_AVX2 inline __m256i Nf4Codes(__m256 x, const Nf4Tables& t) {
  const __m256i eight = _mm256_set1_epi32(8);
  __m256 m = _mm256_cmp_ps(x, t.t7, _CMP_GT_OQ);
  __m256i c = _mm256_and_si256(_mm256_castps_si256(m), eight);
  m = _mm256_cmp_ps(x, _mm256_blendv_ps(t.t3, t.t11, m), _CMP_GT_OQ);
  c = _mm256_add_epi32(c, _mm256_and_si256(_mm256_castps_si256(m), _mm256_set1_epi32(4)));
  m = _mm256_cmp_ps(x, _mm256_permutevar8x32_ps(t.lvl2, _mm256_srli_epi32(c, 2)), _CMP_GT_OQ);
  c = _mm256_add_epi32(c, _mm256_and_si256(_mm256_castps_si256(m), _mm256_set1_epi32(2)));
  m = _mm256_cmp_ps(x, _mm256_permutevar8x32_ps(t.lvl1, _mm256_srli_epi32(c, 1)), _CMP_GT_OQ);
  return _mm256_sub_epi32(c, _mm256_castps_si256(m));  // mask is -1 where x > t
}

struct Fp4Tables {
  __m256 s3, s1, s5, lvl1;
  __m256i rank_to_code;
};

LOADSTAR_AVX2 inline __m256i Fp4Codes(__m256 x, const Fp4Tables& t) {
  const __m256 a = Abs(x);
  __m256 m = _mm256_cmp_ps(a, t.s3, _CMP_GT_OQ);
  __m256i c = _mm256_and_si256(_mm256_castps_si256(m), _mm256_set1_epi32(4));
  m = _mm256_cmp_ps(a, _mm256_blendv_ps(t.s1, t.s5, m), _CMP_GT_OQ);
  c = _mm256_add_epi32(c, _mm256_and_si256(_mm256_castps_si256(m), _mm256_set1_epi32(2)));
  m = _mm256_cmp_ps(a, _mm256_permutevar8x32_ps(t.lvl1, _mm256_srli_epi32(c, 1)), _CMP_GT_OQ);
  c = _mm256_sub_epi32(c, _mm256_castps_si256(m));
  c = _mm256_permutevar8x32_epi32(t.rank_to_code, c);
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_or_si256(c, _mm256_and_si256(_mm256_castps_si256(neg), _mm256_set1_epi32(8)));
}

// 32 codes (4 x 8 int32, values < 16) -> 16 packed bytes, element 2j in the high nibble.
LOADSTAR_AVX2 inline void Pack32(__m256i c0, __m256i c1, __m256i c2, __m256i c3, uint8_t* out) {
  const __m256i p01 = _mm256_packus_epi32(c0, c1);
  const __m256i p23 = _mm256_packus_epi32(c2, c3);
  __m256i b = _mm256_packus_epi16(p01, p23);
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  const __m256i hi = _mm256_and_si256(_mm256_slli_epi16(b, 4), _mm256_set1_epi16(0x00F0));
  const __m256i lo = _mm256_srli_epi16(b, 8);
  __m256i r = _mm256_or_si256(hi, lo);
  r = _mm256_packus_epi16(r, r);
  r = _mm256_permute4x64_epi64(r, 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(r));
}

template <Fp4Kind kKind, typename T>
LOADSTAR_AVX2 void QuantizeBlocks(const T* in, int64_t num_blocks, int blocksize,
                                  float* absmax, uint8_t* packed) {
  Nf4Tables nt;
  Fp4Tables ft;
  if (kKind == Fp4Kind::kNf4) {
    const float* t = kNf4Thresholds;
    nt.t7 = _mm256_set1_ps(t[7]);
    nt.t3 = _mm256_set1_ps(t[3]);
    nt.t11 = _mm256_set1_ps(t[11]);
    nt.lvl2 = _mm256_setr_ps(t[1], t[5], t[9], t[13], t[13], t[13], t[13], t[13]);
    nt.lvl1 = _mm256_setr_ps(t[0], t[2], t[4], t[6], t[8], t[10], t[12], t[14]);
  } else {
    const float* s = kFp4Thresholds;
    ft.s3 = _mm256_set1_ps(s[3]);
    ft.s1 = _mm256_set1_ps(s[1]);
    ft.s5 = _mm256_set1_ps(s[5]);
    ft.lvl1 = _mm256_setr_ps(s[0], s[2], s[4], s[6], s[6], s[6], s[6], s[6]);
    ft.rank_to_code = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kFp4RankToCode));
  }
  // Blocks go in groups of 16: all absmax first, then the reciprocals, then the codes, so
  // the long per-block chain (reduce -> divide -> encode) of one block does not serialize
  // the next; small blocksizes (32, 64) are latency-bound otherwise.
  constexpr int kGroup = 16;
  float inv_group[kGroup];
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int64_t g = b % kGroup;
    if (g == 0) {
      const int64_t group_end = b + kGroup < num_blocks ? b + kGroup : num_blocks;
      for (int64_t j = b; j < group_end; ++j) absmax[j] = AbsmaxAvx2(in + j * blocksize, blocksize);
      for (int64_t j = b; j < group_end; ++j) inv_group[j - b] = 1.0f / absmax[j];
    }
    const T* x = in + b * blocksize;
    const __m256 inv = _mm256_set1_ps(inv_group[g]);
    uint8_t* out = packed + b * (blocksize / 2);
    for (int i = 0; i < blocksize; i += 32) {
      __m256i c[4];
      for (int k = 0; k < 4; ++k) {
        const __m256 xn = _mm256_mul_ps(Load8(x + i + 8 * k), inv);
        c[k] = kKind == Fp4Kind::kNf4 ? Nf4Codes(xn, nt) : Fp4Codes(xn, ft);
      }
      Pack32(c[0], c[1], c[2], c[3], out + i / 2);
    }
  }
}

template <Fp4Kind kKind>
LOADSTAR_AVX2 void QuantizeKind(DType in_dtype, const void* in, int64_t num_blocks,
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

LOADSTAR_AVX2 void Avx2Quantize4bit(Fp4Kind kind, DType in_dtype, const void* in,
                                    int64_t num_blocks, int blocksize, float* absmax,
                                    uint8_t* packed) {
  if (kind == Fp4Kind::kNf4) {
    QuantizeKind<Fp4Kind::kNf4>(in_dtype, in, num_blocks, blocksize, absmax, packed);
  } else {
    QuantizeKind<Fp4Kind::kFp4>(in_dtype, in, num_blocks, blocksize, absmax, packed);
  }
}

// ---- dequantize ----

LOADSTAR_AVX2 inline void Store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
LOADSTAR_AVX2 inline void Store8(Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
LOADSTAR_AVX2 inline void Store8(BFloat16* p, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i bias = _mm256_add_epi32(
      _mm256_set1_epi32(0x7FFF), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(nan), _mm256_castsi256_ps(r),
                                           _mm256_cmp_ps(v, v, _CMP_ORD_Q)));
  __m256i p16 = _mm256_packus_epi32(r, r);
  p16 = _mm256_permute4x64_epi64(p16, 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(p16));
}

template <typename T>
LOADSTAR_AVX2 void DequantizeBlocks(const float* lut16, const uint8_t* packed,
                                    const float* absmax, int64_t num_blocks, int blocksize,
                                    T* out) {
  const __m256 lo_tab = _mm256_loadu_ps(lut16);
  const __m256 hi_tab = _mm256_loadu_ps(lut16 + 8);
  const __m128i nib = _mm_set1_epi8(0x0F);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const __m256 am = _mm256_set1_ps(absmax[b]);
    const uint8_t* src = packed + b * (blocksize / 2);
    T* dst = out + b * blocksize;
    for (int i = 0; i < blocksize; i += 32) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i / 2));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
      const __m128i lo = _mm_and_si128(bytes, nib);
      const __m128i codes[2] = {_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo)};
      for (int h = 0; h < 2; ++h) {
        for (int q = 0; q < 2; ++q) {
          const __m128i c8 = q == 0 ? codes[h] : _mm_srli_si128(codes[h], 8);
          const __m256i idx = _mm256_cvtepu8_epi32(c8);
          const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
          const __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo_tab, idx),
                                            _mm256_permutevar8x32_ps(hi_tab, idx), sel);
          Store8(dst + i + 16 * h + 8 * q, _mm256_mul_ps(v, am));
        }
      }
    }
  }
}

LOADSTAR_AVX2 void Avx2Dequantize4bit(Fp4Kind kind, const uint8_t* packed, const float* absmax,
                                      int64_t num_blocks, int blocksize, DType out_dtype,
                                      void* out) {
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

// ---- int8 rows ----

LOADSTAR_AVX2 float Avx2HalfRowAbsmax(const Half* row, int64_t cols) {
  __m256 m = _mm256_set1_ps(kMinusFltMax);
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8) m = _mm256_max_ps(Abs(Load8(row + i)), m);
  float r = HMax(m);
  for (; i < cols; ++i) r = fmaxf(r, fabsf(ToFloat(row[i])));
  return r;
}

LOADSTAR_AVX2 inline __m256i RoundToInt(__m256 v) {
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0
  return _mm256_cvtps_epi32(v);                           // MXCSR default: nearest even
}

LOADSTAR_AVX2 void Avx2Int8Row(const Half* row, int64_t cols, float scale, int8_t* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= cols; i += 16) {
    const __m256i a = RoundToInt(_mm256_mul_ps(Load8(row + i), s));
    const __m256i b = RoundToInt(_mm256_mul_ps(Load8(row + i + 8), s));
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    const __m128i r = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), r);
  }
  for (; i < cols; ++i) out[i] = Int8Quantize(ToFloat(row[i]), scale);
}

template <typename From, typename To>
LOADSTAR_AVX2 void CastTyped(const From* in, int64_t n, To* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) Store8(out + i, Load8(in + i));
  GenericCast(DTypeOf(in), in + i, n - i, DTypeOf(out), out + i);
}

template <typename From>
LOADSTAR_AVX2 void CastFrom(const From* in, int64_t n, DType to, void* out) {
  switch (to) {
    case DType::kF16:
      return CastTyped(in, n, static_cast<Half*>(out));
    case DType::kBF16:
      return CastTyped(in, n, static_cast<BFloat16*>(out));
    default:
      return CastTyped(in, n, static_cast<float*>(out));
  }
}

LOADSTAR_AVX2 void Avx2Cast(DType from, const void* in, int64_t n, DType to, void* out) {
  switch (from) {
    case DType::kF16:
      return CastFrom(static_cast<const Half*>(in), n, to, out);
    case DType::kBF16:
      return CastFrom(static_cast<const BFloat16*>(in), n, to, out);
    default:
      return CastFrom(static_cast<const float*>(in), n, to, out);
  }
}

// DynamicCode on 8 values at once: the same binary search, one gather per step. Lanes
// whose value equals the midpoint found (a tie, which the search path decides) and the
// tail take the scalar DynamicCode.
LOADSTAR_AVX2 void Avx2DynamicCodes(const float* code, const float* midpoints, const float* x,
                                    int64_t n, float scale, uint8_t* out) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256 first = _mm256_set1_ps(midpoints[127]);  // the first probe is the same for all
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s);
    __m256i idx = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(first, v, _CMP_LT_OQ)),
                                   _mm256_set1_epi32(128));
    for (int step = 64; step >= 1; step >>= 1) {
      const __m256i probe = _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1));
      const __m256 m = _mm256_i32gather_ps(midpoints, probe, 4);
      const __m256 lt = _mm256_cmp_ps(m, v, _CMP_LT_OQ);
      idx = _mm256_add_epi32(idx, _mm256_and_si256(_mm256_castps_si256(lt),
                                                   _mm256_set1_epi32(step)));
    }
    const __m256 at = _mm256_i32gather_ps(midpoints, idx, 4);
    const int ties = _mm256_movemask_ps(_mm256_cmp_ps(at, v, _CMP_EQ_OQ));
    alignas(32) int32_t lane[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane), idx);
    for (int k = 0; k < 8; ++k) out[i + k] = static_cast<uint8_t>(lane[k]);
    if (ties != 0) {
      for (int k = 0; k < 8; ++k) {
        if (ties & (1 << k)) out[i + k] = QuantizeDynamic(code, x[i + k] * scale);
      }
    }
  }
  for (; i < n; ++i) out[i] = DynamicCode(code, midpoints, x[i] * scale);
}

}  // namespace

const CpuKernels& Avx2Kernels() {
  static const CpuKernels k = {Avx2Quantize4bit,  Avx2Dequantize4bit, Avx2Int8Row,
                               Avx2HalfRowAbsmax, Avx2Cast,           Avx2DynamicCodes};
  return k;
}

}  // namespace internal
}  // namespace quant
}  // namespace loadstar

#else  // not x86-64 GCC/Clang: AVX2 is never selected.

namespace loadstar {
namespace quant {
namespace internal {
const CpuKernels& Avx2Kernels() { return GenericKernels(); }
}  // namespace internal
}  // namespace quant
}  // namespace loadstar

#endif
