#include "quant/blockwise.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "quant/blockwise_math.h"
#include "quant/cpu_kernels.h"

namespace loadstar {
namespace quant {
namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Fp4Kind KindOf(QuantType type) {
  return type == QuantType::kNf4 ? Fp4Kind::kNf4 : Fp4Kind::kFp4;
}

bool IsFloatIo(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

const uint8_t* ElementPtr(const void* base, DType dtype, int64_t index) {
  return static_cast<const uint8_t*>(base) + index * static_cast<int64_t>(DTypeSize(dtype));
}

// One (possibly partial) block through the reference math.
void RefQuantizeBlock(Fp4Kind kind, DType in_dtype, const void* in, int64_t n, float* absmax,
                      uint8_t* packed) {
  auto run = [&](auto* typed) {
    if (kind == Fp4Kind::kNf4) {
      Quantize4bitBlock<Fp4Kind::kNf4>(typed, n, absmax, packed);
    } else {
      Quantize4bitBlock<Fp4Kind::kFp4>(typed, n, absmax, packed);
    }
  };
  switch (in_dtype) {
    case DType::kF16:
      return run(static_cast<const Half*>(in));
    case DType::kBF16:
      return run(static_cast<const BFloat16*>(in));
    default:
      return run(static_cast<const float*>(in));
  }
}

void RefDequantizeBlock(Fp4Kind kind, const uint8_t* packed, int64_t n, float absmax,
                        DType out_dtype, void* out) {
  auto run = [&](auto* typed) {
    if (kind == Fp4Kind::kNf4) {
      Dequantize4bitBlock<Fp4Kind::kNf4>(packed, n, absmax, typed);
    } else {
      Dequantize4bitBlock<Fp4Kind::kFp4>(packed, n, absmax, typed);
    }
  };
  switch (out_dtype) {
    case DType::kF16:
      return run(static_cast<Half*>(out));
    case DType::kBF16:
      return run(static_cast<BFloat16*>(out));
    default:
      return run(static_cast<float*>(out));
  }
}

absl::Status CheckShape(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(fmt::format("negative dimension {}", d));
  }
  if (Product(shape) == 0) return absl::InvalidArgumentError("cannot quantize an empty tensor");
  return absl::OkStatus();
}

}  // namespace

int64_t Quantized4bit::num_elements() const { return Product(shape); }

int64_t Quantized4bit::num_blocks() const {
  return (num_elements() + spec.blocksize - 1) / spec.blocksize;
}

std::vector<float> Quantized4bit::Absmax() const {
  if (!spec.double_quant) return absmax;
  std::vector<float> out(nested.codes.size());
  UnnestAbsmax(nested, out.data());
  return out;
}

absl::Status Validate4bit(const Fp4Spec& spec, DType in_dtype) {
  if (spec.type != QuantType::kNf4 && spec.type != QuantType::kFp4) {
    return absl::InvalidArgumentError(fmt::format(
        "4-bit quantization needs type nf4 or fp4, got {}", QuantTypeName(spec.type)));
  }
  if (absl::Status s = CheckBlocksize(spec.blocksize); !s.ok()) return s;
  if (!IsFloatIo(in_dtype)) {
    return absl::InvalidArgumentError(fmt::format(
        "4-bit quantization needs F32, F16 or BF16 input, got {}", DTypeName(in_dtype)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Quantized4bit> Quantize4bitRef(const Fp4Spec& spec, DType in_dtype,
                                              const void* data,
                                              const std::vector<int64_t>& shape) {
  if (absl::Status s = Validate4bit(spec, in_dtype); !s.ok()) return s;
  if (absl::Status s = CheckShape(shape); !s.ok()) return s;
  const int64_t n = Product(shape);
  const int64_t bs = spec.blocksize;
  const int64_t blocks = (n + bs - 1) / bs;
  std::vector<uint8_t> packed(static_cast<size_t>((n + 1) / 2));
  std::vector<float> absmax(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t len = std::min(bs, n - b * bs);
    RefQuantizeBlock(KindOf(spec.type), in_dtype, ElementPtr(data, in_dtype, b * bs), len,
                     &absmax[b], packed.data() + b * bs / 2);
  }
  return Finish4bit(spec, in_dtype, shape, std::move(packed), std::move(absmax));
}

absl::Status Quantize4bitChunk(const Fp4Spec& spec, DType in_dtype, const void* chunk,
                               int64_t element_offset, int64_t count, int64_t total_elements,
                               uint8_t* packed, float* absmax,
                               const QuantizeOptions& options) {
  if (absl::Status s = Validate4bit(spec, in_dtype); !s.ok()) return s;
  const int64_t bs = spec.blocksize;
  if (element_offset < 0 || count < 0 || element_offset + count > total_elements) {
    return absl::InvalidArgumentError(
        fmt::format("chunk [{}, {}) is outside the tensor of {} elements", element_offset,
                    element_offset + count, total_elements));
  }
  if (element_offset % bs != 0 ||
      (count % bs != 0 && element_offset + count != total_elements)) {
    return absl::InvalidArgumentError(fmt::format(
        "chunk [{}, {}) is not aligned to blocksize {} (only the tensor's last chunk may end "
        "mid-block)",
        element_offset, element_offset + count, bs));
  }
  const Fp4Kind kind = KindOf(spec.type);
  const int64_t full_blocks = count / bs;
  const int64_t first_block = element_offset / bs;
  const internal::CpuKernels& k = internal::BestKernels();
  // Grain: enough blocks for ~64 KiB of input per task, so threads pay off.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (bs * DTypeSize(in_dtype)));
  const int threads =
      full_blocks * bs < (int64_t{1} << 18) ? 1 : options.threads;  // small: stay inline
  internal::ParallelFor(full_blocks, grain, threads, [&](int64_t b0, int64_t b1) {
    k.quantize_4bit(kind, in_dtype, ElementPtr(chunk, in_dtype, b0 * bs), b1 - b0,
                    static_cast<int>(bs), absmax + first_block + b0,
                    packed + (first_block + b0) * bs / 2);
  });
  const int64_t tail = count - full_blocks * bs;
  if (tail > 0) {
    RefQuantizeBlock(kind, in_dtype, ElementPtr(chunk, in_dtype, full_blocks * bs), tail,
                     absmax + first_block + full_blocks,
                     packed + (first_block + full_blocks) * bs / 2);
  }
  return absl::OkStatus();
}

absl::StatusOr<Quantized4bit> Quantize4bit(const Fp4Spec& spec, DType in_dtype,
                                           const void* data, const std::vector<int64_t>& shape,
                                           const QuantizeOptions& options) {
  if (absl::Status s = Validate4bit(spec, in_dtype); !s.ok()) return s;
  if (absl::Status s = CheckShape(shape); !s.ok()) return s;
  const int64_t n = Product(shape);
  const int64_t blocks = (n + spec.blocksize - 1) / spec.blocksize;
  std::vector<uint8_t> packed(static_cast<size_t>((n + 1) / 2));
  std::vector<float> absmax(static_cast<size_t>(blocks));
  if (absl::Status s = Quantize4bitChunk(spec, in_dtype, data, 0, n, n, packed.data(),
                                         absmax.data(), options);
      !s.ok()) {
    return s;
  }
  return Finish4bit(spec, in_dtype, shape, std::move(packed), std::move(absmax));
}

Quantized4bit Finish4bit(const Fp4Spec& spec, DType dtype, std::vector<int64_t> shape,
                         std::vector<uint8_t> packed, std::vector<float> absmax) {
  Quantized4bit q;
  q.spec = spec;
  q.dtype = dtype;
  q.shape = std::move(shape);
  q.packed = std::move(packed);
  if (spec.double_quant) {
    q.nested = NestAbsmax(absmax.data(), static_cast<int64_t>(absmax.size()));
  } else {
    q.absmax = std::move(absmax);
  }
  return q;
}

namespace {

absl::Status CheckQuantized(const Quantized4bit& q, DType out_dtype) {
  if (absl::Status s = Validate4bit(q.spec, out_dtype); !s.ok()) return s;
  const int64_t n = q.num_elements();
  const int64_t blocks = q.num_blocks();
  if (static_cast<int64_t>(q.packed.size()) != (n + 1) / 2) {
    return absl::InvalidArgumentError(fmt::format(
        "packed data has {} bytes, expected {}", q.packed.size(), (n + 1) / 2));
  }
  const size_t absmax_count = q.spec.double_quant ? q.nested.codes.size() : q.absmax.size();
  if (static_cast<int64_t>(absmax_count) != blocks) {
    return absl::InvalidArgumentError(
        fmt::format("absmax has {} entries, expected {}", absmax_count, blocks));
  }
  if (q.spec.double_quant &&
      static_cast<int64_t>(q.nested.nested_absmax.size()) !=
          (blocks + kNestedBlocksize - 1) / kNestedBlocksize) {
    return absl::InvalidArgumentError(
        fmt::format("nested_absmax has {} entries, expected {}", q.nested.nested_absmax.size(),
                    (blocks + kNestedBlocksize - 1) / kNestedBlocksize));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Dequantize4bitRef(const Quantized4bit& q, DType out_dtype, void* out) {
  if (absl::Status s = CheckQuantized(q, out_dtype); !s.ok()) return s;
  const std::vector<float> absmax = q.Absmax();
  const int64_t n = q.num_elements();
  const int64_t bs = q.spec.blocksize;
  const size_t esize = DTypeSize(out_dtype);
  for (int64_t b = 0; b * bs < n; ++b) {
    const int64_t len = std::min(bs, n - b * bs);
    RefDequantizeBlock(KindOf(q.spec.type), q.packed.data() + b * bs / 2, len, absmax[b],
                       out_dtype, static_cast<uint8_t*>(out) + b * bs * esize);
  }
  return absl::OkStatus();
}

absl::Status Dequantize4bit(const Quantized4bit& q, DType out_dtype, void* out,
                            const QuantizeOptions& options) {
  if (absl::Status s = CheckQuantized(q, out_dtype); !s.ok()) return s;
  const std::vector<float> absmax = q.Absmax();
  const int64_t n = q.num_elements();
  const int64_t bs = q.spec.blocksize;
  const size_t esize = DTypeSize(out_dtype);
  const int64_t full_blocks = n / bs;
  const Fp4Kind kind = KindOf(q.spec.type);
  const internal::CpuKernels& k = internal::BestKernels();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (bs * 2));
  const int threads = n < (int64_t{1} << 18) ? 1 : options.threads;
  uint8_t* out_bytes = static_cast<uint8_t*>(out);
  internal::ParallelFor(full_blocks, grain, threads, [&](int64_t b0, int64_t b1) {
    k.dequantize_4bit(kind, q.packed.data() + b0 * bs / 2, absmax.data() + b0, b1 - b0,
                      static_cast<int>(bs), out_dtype, out_bytes + b0 * bs * esize);
  });
  if (full_blocks * bs < n) {
    RefDequantizeBlock(kind, q.packed.data() + full_blocks * bs / 2, n - full_blocks * bs,
                       absmax[full_blocks], out_dtype, out_bytes + full_blocks * bs * esize);
  }
  return absl::OkStatus();
}

std::vector<float> QuantMap(QuantType type) {
  std::vector<float> map(kFp4CodeCount);
  for (int i = 0; i < kFp4CodeCount; ++i) {
    map[i] = type == QuantType::kNf4 ? Nf4Value(static_cast<uint8_t>(i))
                                     : Fp4Value(static_cast<uint8_t>(i));
  }
  // bitsandbytes' get_4bit_type("fp4") stores +0.0 for code 8 (the CUDA dequant computes
  // 0 * -1 = -0.0 from the tree; the exported quant_map keeps bnb's tensor).
  if (type == QuantType::kFp4) map[8] = 0.0f;
  return map;
}

}  // namespace quant
}  // namespace loadstar
