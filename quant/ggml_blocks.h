// ggml block layouts (llama.cpp GGUF quantization formats) and the dequantization of one
// block to fp32, as LOADSTAR_HOST_DEVICE functions shared by the CPU reference
// (quant/ggml_dequant.h) and GPU kernels.
//
// The specification is gguf-py's numpy `dequantize` (gguf/quants.py, *.dequantize_blocks):
// these functions give its fp32 results bit for bit, so each one does the same fp32
// operations in the same order: fp16 fields widened exactly, sub-block scales computed as
// one fp32 multiply (d * sc), then `scale * q` and, where the format has a minimum,
// `+ m` (Q4_1/Q5_1) or `- dmin * m` (K-quants) as a separate rounding (never an FMA; see
// quant/host_device.h). Blocks are read byte by byte (little-endian), so a block may
// start at any address.
//
// Element order inside a block (what gguf-py's reshapes amount to):
//   Q4_0/Q4_1/Q5_x: element j < 16 is the low nibble of qs[j], element j + 16 the high one;
//                   Q5_x adds bit j of the u32 qh as bit 4.
//   Q2_K/Q3_K:      element 128h + 32s + l is bits 2s..2s+1 of qs[32h + l]; its scale is
//                   sub-block (element / 16); Q3_K's bit 2 is bit (element / 32) of
//                   hmask[element % 32], inverted, worth -4.
//   Q4_K/Q5_K:      element 64c + 32s + l is nibble s of qs[32c + l]; sub-block element / 32
//                   with 6-bit scale and min unpacked from scales[12]; Q5_K's bit 4 is bit
//                   (element / 32) of qh[element % 32].
//   Q6_K:           element 128h + 64s + m: nibble s of ql[64h + m]; bits 4..5 are bits
//                   2t..2t+1 of qh[32h + l] for element 128h + 32t + l; value - 32; scale
//                   per 16 elements (int8).
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/float16.h"
#include "quant/host_device.h"

namespace loadstar::quant::ggml {

inline constexpr int kQK = 256;  // QK_K: elements per K-quant super-block
inline constexpr int kQ32 = 32;  // elements per Q4_0..Q8_0 block

// The structs document the layouts (the functions read bytes at their offsets).
struct BlockQ4_0 {
  uint16_t d;       // fp16 scale
  uint8_t qs[16];   // 32 nibbles, value - 8
};
static_assert(sizeof(BlockQ4_0) == 18);
struct BlockQ4_1 {
  uint16_t d;       // fp16 scale
  uint16_t m;       // fp16 minimum
  uint8_t qs[16];   // 32 nibbles
};
static_assert(sizeof(BlockQ4_1) == 20);
struct BlockQ5_0 {
  uint16_t d;       // fp16 scale
  uint8_t qh[4];    // bit 4 of each element (u32, little-endian)
  uint8_t qs[16];   // low 4 bits; value - 16
};
static_assert(sizeof(BlockQ5_0) == 22);
struct BlockQ5_1 {
  uint16_t d;       // fp16 scale
  uint16_t m;       // fp16 minimum
  uint8_t qh[4];    // bit 4 of each element
  uint8_t qs[16];   // low 4 bits
};
static_assert(sizeof(BlockQ5_1) == 24);
struct BlockQ8_0 {
  uint16_t d;       // fp16 scale
  int8_t qs[32];    // values
};
static_assert(sizeof(BlockQ8_0) == 34);
struct BlockQ2_K {
  uint8_t scales[kQK / 16];  // per 16 elements: low nibble scale, high nibble min
  uint8_t qs[kQK / 4];       // 2-bit values
  uint16_t d;                // fp16 super-scale of the scales
  uint16_t dmin;             // fp16 super-scale of the mins
};
static_assert(sizeof(BlockQ2_K) == 84);
struct BlockQ3_K {
  uint8_t hmask[kQK / 8];  // bit 2 of each value (inverted)
  uint8_t qs[kQK / 4];     // low 2 bits
  uint8_t scales[12];      // 16 6-bit scales, value - 32
  uint16_t d;              // fp16 super-scale
};
static_assert(sizeof(BlockQ3_K) == 110);
struct BlockQ4_K {
  uint16_t d;              // fp16 super-scale of the scales
  uint16_t dmin;           // fp16 super-scale of the mins
  uint8_t scales[12];      // 8 6-bit scales and 8 6-bit mins
  uint8_t qs[kQK / 2];     // nibbles
};
static_assert(sizeof(BlockQ4_K) == 144);
struct BlockQ5_K {
  uint16_t d;              // fp16 super-scale of the scales
  uint16_t dmin;           // fp16 super-scale of the mins
  uint8_t scales[12];      // as Q4_K
  uint8_t qh[kQK / 8];     // bit 4 of each value
  uint8_t qs[kQK / 2];     // low nibbles
};
static_assert(sizeof(BlockQ5_K) == 176);
struct BlockQ6_K {
  uint8_t ql[kQK / 2];     // low 4 bits
  uint8_t qh[kQK / 4];     // bits 4..5
  int8_t scales[kQK / 16]; // per 16 elements
  uint16_t d;              // fp16 super-scale
};
static_assert(sizeof(BlockQ6_K) == 210);

LOADSTAR_HOST_DEVICE float Fp16At(const uint8_t* p) {
  return HalfBitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

LOADSTAR_HOST_DEVICE uint32_t U32At(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from scales[12]
// (gguf-py Q4_K.get_scale_min).
LOADSTAR_HOST_DEVICE void KScaleMin(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 0x3F;
    *m = s[j + 4] & 0x3F;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
    *m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

// Q3_K: the signed scale of sub-block k (0..15) from scales[12].
LOADSTAR_HOST_DEVICE int Q3Scale(const uint8_t* s, int k) {
  int low = k < 8 ? (s[k] & 0x0F) : (s[k - 8] >> 4);
  int high = (s[8 + (k % 4)] >> (2 * (k / 4))) & 0x03;
  return (low | (high << 4)) - 32;
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ4_0(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const uint8_t* qs = b + offsetof(BlockQ4_0, qs);
  for (int j = 0; j < 16; ++j) {
    y[j] = LOADSTAR_FMUL_RN(d, static_cast<float>((qs[j] & 0x0F) - 8));
    y[j + 16] = LOADSTAR_FMUL_RN(d, static_cast<float>((qs[j] >> 4) - 8));
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ4_1(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const float m = Fp16At(b + offsetof(BlockQ4_1, m));
  const uint8_t* qs = b + offsetof(BlockQ4_1, qs);
  for (int j = 0; j < 16; ++j) {
    y[j] = LOADSTAR_FADD_RN(LOADSTAR_FMUL_RN(d, static_cast<float>(qs[j] & 0x0F)), m);
    y[j + 16] = LOADSTAR_FADD_RN(LOADSTAR_FMUL_RN(d, static_cast<float>(qs[j] >> 4)), m);
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ5_0(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const uint32_t qh = U32At(b + offsetof(BlockQ5_0, qh));
  const uint8_t* qs = b + offsetof(BlockQ5_0, qs);
  for (int j = 0; j < 16; ++j) {
    int lo = (qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
    int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = LOADSTAR_FMUL_RN(d, static_cast<float>(lo - 16));
    y[j + 16] = LOADSTAR_FMUL_RN(d, static_cast<float>(hi - 16));
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ5_1(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const float m = Fp16At(b + offsetof(BlockQ5_1, m));
  const uint32_t qh = U32At(b + offsetof(BlockQ5_1, qh));
  const uint8_t* qs = b + offsetof(BlockQ5_1, qs);
  for (int j = 0; j < 16; ++j) {
    int lo = (qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
    int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = LOADSTAR_FADD_RN(LOADSTAR_FMUL_RN(d, static_cast<float>(lo)), m);
    y[j + 16] = LOADSTAR_FADD_RN(LOADSTAR_FMUL_RN(d, static_cast<float>(hi)), m);
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ8_0(const uint8_t* b, float* y) {
  const float d = Fp16At(b);
  const uint8_t* qs = b + offsetof(BlockQ8_0, qs);
  for (int j = 0; j < 32; ++j) {
    y[j] = LOADSTAR_FMUL_RN(static_cast<float>(static_cast<int8_t>(qs[j])), d);
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ2_K(const uint8_t* b, float* y) {
  const float d = Fp16At(b + offsetof(BlockQ2_K, d));
  const float dmin = Fp16At(b + offsetof(BlockQ2_K, dmin));
  const uint8_t* scales = b + offsetof(BlockQ2_K, scales);
  const uint8_t* qs = b + offsetof(BlockQ2_K, qs);
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const uint8_t sc = scales[e / 16];
    const float dl = LOADSTAR_FMUL_RN(d, static_cast<float>(sc & 0x0F));
    const float ml = LOADSTAR_FMUL_RN(dmin, static_cast<float>(sc >> 4));
    const int q = (qs[32 * h + l] >> (2 * s)) & 3;
    y[e] = LOADSTAR_FADD_RN(LOADSTAR_FMUL_RN(dl, static_cast<float>(q)), -ml);
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ3_K(const uint8_t* b, float* y) {
  const float d = Fp16At(b + offsetof(BlockQ3_K, d));
  const uint8_t* hmask = b + offsetof(BlockQ3_K, hmask);
  const uint8_t* qs = b + offsetof(BlockQ3_K, qs);
  const uint8_t* scales = b + offsetof(BlockQ3_K, scales);
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const float dl = LOADSTAR_FMUL_RN(d, static_cast<float>(Q3Scale(scales, e / 16)));
    const int low = (qs[32 * h + l] >> (2 * s)) & 3;
    const int high = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
    y[e] = LOADSTAR_FMUL_RN(dl, static_cast<float>(low - (high << 2)));
  }
}

// Q4_K and Q5_K share everything but Q5_K's fifth bit (qh; nullptr for Q4_K).
LOADSTAR_HOST_DEVICE void DequantizeK45(float d, float dmin, const uint8_t* scales,
                                        const uint8_t* qh, const uint8_t* qs, float* y) {
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    KScaleMin(scales, j, &sc, &m);
    const float dl = LOADSTAR_FMUL_RN(d, static_cast<float>(sc));
    const float ml = LOADSTAR_FMUL_RN(dmin, static_cast<float>(m));
    const uint8_t* q = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> shift) & 0x0F;
      if (qh != nullptr) v |= ((qh[l] >> j) & 1) << 4;
      y[32 * j + l] = LOADSTAR_FADD_RN(LOADSTAR_FMUL_RN(dl, static_cast<float>(v)), -ml);
    }
  }
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ4_K(const uint8_t* b, float* y) {
  DequantizeK45(Fp16At(b + offsetof(BlockQ4_K, d)), Fp16At(b + offsetof(BlockQ4_K, dmin)),
                b + offsetof(BlockQ4_K, scales), nullptr, b + offsetof(BlockQ4_K, qs), y);
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ5_K(const uint8_t* b, float* y) {
  DequantizeK45(Fp16At(b + offsetof(BlockQ5_K, d)), Fp16At(b + offsetof(BlockQ5_K, dmin)),
                b + offsetof(BlockQ5_K, scales), b + offsetof(BlockQ5_K, qh),
                b + offsetof(BlockQ5_K, qs), y);
}

LOADSTAR_HOST_DEVICE void DequantizeBlockQ6_K(const uint8_t* b, float* y) {
  const float d = Fp16At(b + offsetof(BlockQ6_K, d));
  const uint8_t* ql = b + offsetof(BlockQ6_K, ql);
  const uint8_t* qh = b + offsetof(BlockQ6_K, qh);
  const uint8_t* scales = b + offsetof(BlockQ6_K, scales);
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, r = e % 128;
    const int low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
    const int high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
    const float ds =
        LOADSTAR_FMUL_RN(d, static_cast<float>(static_cast<int8_t>(scales[e / 16])));
    y[e] = LOADSTAR_FMUL_RN(ds, static_cast<float>((low | (high << 4)) - 32));
  }
}

}  // namespace loadstar::quant::ggml
