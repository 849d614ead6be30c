// Portable kernels: the HOST_DEVICE per-block math, block by block.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "quant/cpu_kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace loadstar {
namespace quant {
namespace internal {
namespace {

template <Fp4Kind kKind, typename T>
void Quantize4bitTyped(const T* in, int64_t num_blocks, int blocksize, float* absmax,
                       uint8_t* packed) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    Quantize4bitBlock<kKind>(in + b * blocksize, blocksize, absmax + b,
                             packed + b * (blocksize / 2));
  }
}

template <Fp4Kind kKind>
void Quantize4bitKind(DType in_dtype, const void* in, int64_t num_blocks, int blocksize,
                      float* absmax, uint8_t* packed) {
  switch (in_dtype) {
    case DType::kF16:
      return Quantize4bitTyped<kKind>(static_cast<const Half*>(in), num_blocks, blocksize,
                                      absmax, packed);
    case DType::kBF16:
      return Quantize4bitTyped<kKind>(static_cast<const BFloat16*>(in), num_blocks, blocksize,
                                      absmax, packed);
    default:
      return Quantize4bitTyped<kKind>(static_cast<const float*>(in), num_blocks, blocksize,
                                      absmax, packed);
  }
}

void GenericQuantize4bit(Fp4Kind kind, DType in_dtype, const void* in, int64_t num_blocks,
                         int blocksize, float* absmax, uint8_t* packed) {
  if (kind == Fp4Kind::kNf4) {
    Quantize4bitKind<Fp4Kind::kNf4>(in_dtype, in, num_blocks, blocksize, absmax, packed);
  } else {
    Quantize4bitKind<Fp4Kind::kFp4>(in_dtype, in, num_blocks, blocksize, absmax, packed);
  }
}

template <Fp4Kind kKind, typename T>
void Dequantize4bitTyped(const uint8_t* packed, const float* absmax, int64_t num_blocks,
                         int blocksize, T* out) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    Dequantize4bitBlock<kKind>(packed + b * (blocksize / 2), blocksize, absmax[b],
                               out + b * blocksize);
  }
}

template <Fp4Kind kKind>
void Dequantize4bitKind(const uint8_t* packed, const float* absmax, int64_t num_blocks,
                        int blocksize, DType out_dtype, void* out) {
  switch (out_dtype) {
    case DType::kF16:
      return Dequantize4bitTyped<kKind>(packed, absmax, num_blocks, blocksize,
                                        static_cast<Half*>(out));
    case DType::kBF16:
      return Dequantize4bitTyped<kKind>(packed, absmax, num_blocks, blocksize,
                                        static_cast<BFloat16*>(out));
    default:
      return Dequantize4bitTyped<kKind>(packed, absmax, num_blocks, blocksize,
                                        static_cast<float*>(out));
  }
}

void GenericDequantize4bit(Fp4Kind kind, const uint8_t* packed, const float* absmax,
                           int64_t num_blocks, int blocksize, DType out_dtype, void* out) {
  if (kind == Fp4Kind::kNf4) {
    Dequantize4bitKind<Fp4Kind::kNf4>(packed, absmax, num_blocks, blocksize, out_dtype, out);
  } else {
    Dequantize4bitKind<Fp4Kind::kFp4>(packed, absmax, num_blocks, blocksize, out_dtype, out);
  }
}

void GenericInt8Row(const Half* row, int64_t cols, float scale, int8_t* out) {
  for (int64_t i = 0; i < cols; ++i) out[i] = Int8Quantize(ToFloat(row[i]), scale);
}

float GenericHalfRowAbsmax(const Half* row, int64_t cols) { return BlockAbsmax(row, cols); }

template <typename From, typename To>
void CastTyped(const From* in, int64_t n, To* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = FromFloat<To>(ToFloat(in[i]));
}

template <typename From>
void CastFrom(const From* in, int64_t n, DType to, void* out) {
  switch (to) {
    case DType::kF16:
      return CastTyped(in, n, static_cast<Half*>(out));
    case DType::kBF16:
      return CastTyped(in, n, static_cast<BFloat16*>(out));
    default:
      return CastTyped(in, n, static_cast<float*>(out));
  }
}

}  // namespace

void GenericCast(DType from, const void* in, int64_t n, DType to, void* out) {
  switch (from) {
    case DType::kF16:
      return CastFrom(static_cast<const Half*>(in), n, to, out);
    case DType::kBF16:
      return CastFrom(static_cast<const BFloat16*>(in), n, to, out);
    default:
      return CastFrom(static_cast<const float*>(in), n, to, out);
  }
}

namespace {
void GenericDynamicCodes(const float* code, const float* midpoints, const float* x, int64_t n,
                         float scale, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = DynamicCode(code, midpoints, x[i] * scale);
}
}  // namespace

const CpuKernels& GenericKernels() {
  static const CpuKernels k = {GenericQuantize4bit, GenericDequantize4bit, GenericInt8Row,
                               GenericHalfRowAbsmax, GenericCast,        GenericDynamicCodes};
  return k;
}

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kGeneric:
      return "generic";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
namespace {
// F16C straight from CPUID (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports does
// not accept "f16c" (scripts/fuzz builds with clang), gcc's does; both ship <cpuid.h>.
// The OS-enabled-YMM check F16C's 256-bit forms need is part of the "avx2" test beside it.
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
}  // namespace
#endif

bool IsaSupported(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  switch (isa) {
    case Isa::kGeneric:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16c();
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == Isa::kGeneric;
#endif
}

const CpuKernels& KernelsFor(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return Avx2Kernels();
    case Isa::kAvx512:
      return Avx512Kernels();
    default:
      return GenericKernels();
  }
}

Isa BestIsa() {
  static const Isa best = [] {
    Isa cap = Isa::kAvx512;
    if (const char* env = std::getenv("LOADSTAR_QUANT_ISA")) {
      const std::string v(env);
      if (v == "generic") cap = Isa::kGeneric;
      if (v == "avx2") cap = Isa::kAvx2;
    }
    for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
      if (static_cast<int>(isa) <= static_cast<int>(cap) && IsaSupported(isa)) return isa;
    }
    return Isa::kGeneric;
  }();
  return best;
}

const CpuKernels& BestKernels() { return KernelsFor(BestIsa()); }

void ParallelFor(int64_t n, int64_t grain, int threads,
                 void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx) {
  if (n <= 0) return;
  if (threads == 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (grain < 1) grain = 1;
  const int64_t grains = (n + grain - 1) / grain;
  if (threads > grains) threads = static_cast<int>(grains);
  if (threads <= 1) {
    fn(ctx, 0, n);
    return;
  }
  const int64_t per = (grains + threads - 1) / threads * grain;
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) {
    const int64_t b = t * per;
    if (b >= n) break;
    const int64_t e = std::min(n, b + per);
    pool.emplace_back([fn, ctx, b, e] { fn(ctx, b, e); });
  }
  fn(ctx, 0, std::min(n, per));
  for (auto& th : pool) th.join();
}

}  // namespace internal
}  // namespace quant
}  // namespace loadstar
