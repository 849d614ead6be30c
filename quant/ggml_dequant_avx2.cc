// AVX2 dequantization of the ggml block types. Each block's integer codes are unpacked
// 32 at a time into int8 lanes with byte shuffles and shifts, widened to fp32 and scaled
// with the same fp32 operations, in the same order, as quant/ggml_blocks.h (a multiply,
// then a separate add or subtract of the minimum; no FMA), so the results are the
// reference's bits (tested in tests/quant/ggml_dequant_test.cc). Sub-block scales are
// computed in scalar fp32 exactly as the reference computes them.
#include <immintrin.h>

#include <cstring>

#include "quant/ggml_blocks.h"
#include "quant/ggml_dequant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOADSTAR_AVX2 __attribute__((target("avx2,f16c")))

namespace loadstar::quant::internal {
namespace {

using ggml::Fp16At;
using ggml::kQK;

enum class MinMode { kNone, kAdd, kSub };

// y[0..32) = scale[g] * codes[i] (+|- min[g]), g = i / 8.
template <MinMode mode>
LOADSTAR_AVX2 inline void Emit32(__m256i codes, const float* scale, const float* min,
                                 float* y) {
  const __m128i lo = _mm256_castsi256_si128(codes);
  const __m128i hi = _mm256_extracti128_si256(codes, 1);
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int g = 0; g < 4; ++g) {
    const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[g]));
    __m256 r = _mm256_mul_ps(_mm256_set1_ps(scale[g]), f);
    if constexpr (mode == MinMode::kAdd) r = _mm256_add_ps(r, _mm256_set1_ps(min[g]));
    if constexpr (mode == MinMode::kSub) r = _mm256_sub_ps(r, _mm256_set1_ps(min[g]));
    _mm256_storeu_ps(y + 8 * g, r);
  }
}

LOADSTAR_AVX2 inline __m256i Load32(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// (x >> shift) & mask on every byte.
LOADSTAR_AVX2 inline __m256i ShiftMask(__m256i x, int shift, int mask) {
  return _mm256_and_si256(_mm256_srl_epi16(x, _mm_cvtsi32_si128(shift)),
                          _mm256_set1_epi8(static_cast<char>(mask)));
}

// 16 packed bytes -> 32 nibble codes: low nibbles (elements 0..15), then high ones.
LOADSTAR_AVX2 inline __m256i Nibbles16(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

// Bit i of qh -> 0x10 in byte i (Q5_0/Q5_1's fifth bit).
LOADSTAR_AVX2 inline __m256i Bits32ToBit4(uint32_t qh) {
  const __m256i v = _mm256_set1_epi32(static_cast<int>(qh));
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread), bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

LOADSTAR_AVX2 void Q4_0(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const float s[4] = {d, d, d, d};
  const __m256i q = _mm256_sub_epi8(Nibbles16(b + 2), _mm256_set1_epi8(8));
  Emit32<MinMode::kNone>(q, s, nullptr, y);
}

LOADSTAR_AVX2 void Q4_1(const uint8_t* b, float* y) {
  const float d = Fp16At(b), m = Fp16At(b + 2);
  const float s[4] = {d, d, d, d}, mm[4] = {m, m, m, m};
  Emit32<MinMode::kAdd>(Nibbles16(b + 4), s, mm, y);
}

LOADSTAR_AVX2 void Q5_0(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const float s[4] = {d, d, d, d};
  const __m256i q = _mm256_or_si256(Nibbles16(b + 6), Bits32ToBit4(ggml::U32At(b + 2)));
  Emit32<MinMode::kNone>(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), s, nullptr, y);
}

LOADSTAR_AVX2 void Q5_1(const uint8_t* b, float* y) {
  const float d = Fp16At(b), m = Fp16At(b + 2);
  const float s[4] = {d, d, d, d}, mm[4] = {m, m, m, m};
  const __m256i q = _mm256_or_si256(Nibbles16(b + 8), Bits32ToBit4(ggml::U32At(b + 4)));
  Emit32<MinMode::kAdd>(q, s, mm, y);
}

LOADSTAR_AVX2 void Q8_0(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const float s[4] = {d, d, d, d};
  Emit32<MinMode::kNone>(Load32(b + 2), s, nullptr, y);
}

LOADSTAR_AVX2 void Q2_K(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = Fp16At(b + 80), dmin = Fp16At(b + 82);
  float dl[16], ml[16];
  for (int k = 0; k < 16; ++k) {
    dl[k] = d * static_cast<float>(scales[k] & 0x0F);
    ml[k] = dmin * static_cast<float>(scales[k] >> 4);
  }
  for (int g = 0; g < 8; ++g) {
    const __m256i q = ShiftMask(Load32(qs + 32 * (g / 4)), 2 * (g % 4), 3);
    const float s[4] = {dl[2 * g], dl[2 * g], dl[2 * g + 1], dl[2 * g + 1]};
    const float m[4] = {ml[2 * g], ml[2 * g], ml[2 * g + 1], ml[2 * g + 1]};
    Emit32<MinMode::kSub>(q, s, m, y + 32 * g);
  }
}

LOADSTAR_AVX2 void Q3_K(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* scales = b + 96;
  const float d = Fp16At(b + 108);
  float dl[16];
  for (int k = 0; k < 16; ++k) dl[k] = d * static_cast<float>(ggml::Q3Scale(scales, k));
  const __m256i h = Load32(hmask);
  for (int g = 0; g < 8; ++g) {
    const __m256i low = ShiftMask(Load32(qs + 32 * (g / 4)), 2 * (g % 4), 3);
    // Bit g of hmask set: no offset; clear: -4.
    const __m256i high = _mm256_xor_si256(ShiftMask(h, g, 1), _mm256_set1_epi8(1));
    const __m256i q = _mm256_sub_epi8(low, _mm256_slli_epi16(high, 2));
    const float s[4] = {dl[2 * g], dl[2 * g], dl[2 * g + 1], dl[2 * g + 1]};
    Emit32<MinMode::kNone>(q, s, nullptr, y + 32 * g);
  }
}

template <bool kFive>
LOADSTAR_AVX2 void Q45_K(const uint8_t* b, float* y) {
  const float d = Fp16At(b), dmin = Fp16At(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (kFive ? 48 : 16);
  const __m256i h = kFive ? Load32(qh) : _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    ggml::KScaleMin(scales, j, &sc, &m);
    const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
    __m256i q = ShiftMask(Load32(qs + 32 * (j / 2)), 4 * (j % 2), 0x0F);
    if (kFive) q = _mm256_or_si256(q, _mm256_slli_epi16(ShiftMask(h, j, 1), 4));
    const float s[4] = {dl, dl, dl, dl}, mm[4] = {ml, ml, ml, ml};
    Emit32<MinMode::kSub>(q, s, mm, y + 32 * j);
  }
}

LOADSTAR_AVX2 void Q6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = Fp16At(b + 208);
  float ds[16];
  for (int k = 0; k < 16; ++k) ds[k] = d * static_cast<float>(scales[k]);
  for (int g = 0; g < 8; ++g) {
    const int h = g / 4, t = g % 4;
    const __m256i low = ShiftMask(Load32(ql + 64 * h + 32 * (t & 1)), 4 * (t / 2), 0x0F);
    const __m256i high = ShiftMask(Load32(qh + 32 * h), 2 * t, 3);
    const __m256i q = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)),
                                      _mm256_set1_epi8(32));
    const float s[4] = {ds[2 * g], ds[2 * g], ds[2 * g + 1], ds[2 * g + 1]};
    Emit32<MinMode::kNone>(q, s, nullptr, y + 32 * g);
  }
}

LOADSTAR_AVX2 void Halves(const uint8_t* in, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                  reinterpret_cast<const __m128i*>(in + 2 * i))));
  }
  for (; i < n; ++i) out[i] = Fp16At(in + 2 * i);
}

LOADSTAR_AVX2 void BFloats(const uint8_t* in, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  for (; i < n; ++i) out[i] = BFloat16BitsToFloat(static_cast<uint16_t>(in[2 * i] | (in[2 * i + 1] << 8)));
}

template <void (*kBlock)(const uint8_t*, float*)>
LOADSTAR_AVX2 void Blocks(const uint8_t* in, int64_t blocks, int bytes, int elems, float* out) {
  for (int64_t b = 0; b < blocks; ++b) kBlock(in + b * bytes, out + b * elems);
}

}  // namespace

void DequantizeGgmlAvx2(GgmlType type, const uint8_t* in, int64_t blocks, float* out) {
  const GgmlTypeInfo info = GgmlInfo(type);
  const int bytes = info.block_bytes, elems = info.block_elems;
  switch (type) {
    case GgmlType::kF32: std::memcpy(out, in, static_cast<size_t>(blocks) * 4); return;
    case GgmlType::kF16: Halves(in, blocks, out); return;
    case GgmlType::kBF16: BFloats(in, blocks, out); return;
    case GgmlType::kQ4_0: Blocks<Q4_0>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ4_1: Blocks<Q4_1>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ5_0: Blocks<Q5_0>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ5_1: Blocks<Q5_1>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ8_0: Blocks<Q8_0>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ2_K: Blocks<Q2_K>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ3_K: Blocks<Q3_K>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ4_K: Blocks<Q45_K<false>>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ5_K: Blocks<Q45_K<true>>(in, blocks, bytes, elems, out); return;
    case GgmlType::kQ6_K: Blocks<Q6_K>(in, blocks, bytes, elems, out); return;
  }
}

}  // namespace loadstar::quant::internal

#else  // not x86-64: the reference is the only kernel

namespace loadstar::quant::internal {
void DequantizeGgmlAvx2(GgmlType type, const uint8_t* in, int64_t blocks, float* out) {
  DequantizeGgmlRef(type, in, blocks, out);
}
}  // namespace loadstar::quant::internal

#endif
