// Fuzzes the bitsandbytes quant_state JSON of a 4-bit weight (quant::Parse4bit in
// quant/quant_state.h), which comes from saved bnb checkpoints and stored variants: files
// anyone can hand the store. The input is a 7-byte header, then the JSON:
//   u16 packed bytes, u16 absmax entries, u16 nested_absmax entries (little-endian),
//   u8 flags: bit0 the key says fp4 (else nf4), bit1 absmax is U8 codes (double quant).
// The companion tensors get those sizes (and bitsandbytes' real quant maps), so the
// fuzzer can reach every check past the JSON by matching the sizes to the shape.
// Invariants: bad input is INVALID_ARGUMENT or NOT_FOUND, never a crash; what parses is
// self-consistent (dequantizing it reads only its own buffers, under ASan), and its
// canonical re-serialization parses back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "quant/blockwise.h"
#include "quant/double_quant.h"
#include "quant/quant_state.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using loadstar::DType;
using namespace loadstar::quant;

constexpr std::string_view kWeight = "model.layers.0.mlp.up_proj.weight";
constexpr size_t kHeader = 7;

uint16_t U16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

NamedTensor Tensor(std::string name, DType dtype, int64_t elements, const void* values) {
  NamedTensor t{std::move(name), dtype, {elements}, {}};
  t.data.resize(static_cast<size_t>(elements) * loadstar::DTypeSize(dtype));
  if (values != nullptr && !t.data.empty()) std::memcpy(t.data.data(), values, t.data.size());
  return t;
}

TensorLookup LookupIn(const std::map<std::string, NamedTensor>& tensors) {
  return [&tensors](std::string_view name) -> const NamedTensor* {
    auto it = tensors.find(std::string(name));
    return it == tensors.end() ? nullptr : &it->second;
  };
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kHeader) return 0;
  const uint16_t packed_bytes = U16(data), absmax_count = U16(data + 2);
  const uint16_t nested_count = U16(data + 4);
  const bool fp4 = data[6] & 1, nested = data[6] & 2;
  const std::string w(kWeight);
  const QuantType type = fp4 ? QuantType::kFp4 : QuantType::kNf4;

  std::map<std::string, NamedTensor> tensors;
  auto put = [&](NamedTensor t) { tensors[t.name] = std::move(t); };
  NamedTensor packed = Tensor(w, DType::kU8, packed_bytes, nullptr);
  packed.shape = {packed_bytes, 1};
  for (size_t i = 0; i < packed.data.size(); ++i) packed.data[i] = static_cast<uint8_t>(i * 37);
  put(std::move(packed));
  const std::vector<float> ones(std::max<size_t>(absmax_count, nested_count), 1.0f);
  put(nested ? Tensor(w + ".absmax", DType::kU8, absmax_count, nullptr)
             : Tensor(w + ".absmax", DType::kF32, absmax_count, ones.data()));
  const std::vector<float> map = QuantMap(type);
  put(Tensor(w + ".quant_map", DType::kF32, static_cast<int64_t>(map.size()), map.data()));
  put(Tensor(w + ".nested_absmax", DType::kF32, nested_count, ones.data()));
  put(Tensor(w + ".nested_quant_map", DType::kF32, kDynamicMapSize, kDynamicMapSigned));
  const std::string key = w + ".quant_state.bitsandbytes__" + std::string(QuantTypeName(type));
  put(Tensor(key, DType::kU8, static_cast<int64_t>(size - kHeader), data + kHeader));

  absl::StatusOr<Quantized4bit> q = Parse4bit(kWeight, LookupIn(tensors));
  if (!q.ok()) {
    FUZZ_CHECK(q.status().code() == absl::StatusCode::kInvalidArgument ||
                   q.status().code() == absl::StatusCode::kNotFound,
               "{}", q.status().ToString());
    return 0;
  }
  const int64_t n = q->num_elements();
  FUZZ_CHECK(static_cast<int64_t>(q->packed.size()) == (n + 1) / 2, "packed {} for {} elements",
             q->packed.size(), n);
  std::vector<float> out(static_cast<size_t>(n));
  absl::Status s = Dequantize4bitRef(*q, DType::kF32, out.data());
  FUZZ_CHECK(s.ok(), "a parsed state does not dequantize: {}", s.ToString());

  // Canonical bytes of what was parsed must parse back to themselves.
  std::map<std::string, NamedTensor> again;
  for (NamedTensor& t : Serialize4bit(kWeight, *q)) again[t.name] = std::move(t);
  absl::StatusOr<Quantized4bit> q2 = Parse4bit(kWeight, LookupIn(again));
  FUZZ_CHECK(q2.ok(), "re-serialized state does not parse: {}", q2.status().ToString());
  FUZZ_CHECK(QuantStateJson(*q2) == QuantStateJson(*q), "{} vs {}", QuantStateJson(*q2),
             QuantStateJson(*q));
  return 0;
}
