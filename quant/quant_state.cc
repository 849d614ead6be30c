#include "quant/quant_state.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "quant/double_quant.h"

namespace loadstar {
namespace quant {
namespace {

template <typename T>
NamedTensor MakeTensor(std::string name, DType dtype, std::vector<int64_t> shape,
                       const T* values, size_t count) {
  NamedTensor t{std::move(name), dtype, std::move(shape), {}};
  t.data.resize(count * sizeof(T));
  if (count) std::memcpy(t.data.data(), values, t.data.size());
  return t;
}

std::string StateKey(QuantType type) {
  return "quant_state.bitsandbytes__" + std::string(QuantTypeName(type));
}

std::string Shape(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

absl::StatusOr<const NamedTensor*> Require(const TensorLookup& lookup, const std::string& name,
                                           DType dtype) {
  const NamedTensor* t = lookup(name);
  if (t == nullptr) return absl::NotFoundError(fmt::format("missing tensor {}", name));
  if (t->dtype != dtype) {
    return absl::InvalidArgumentError(fmt::format("{}: dtype {}, expected {}", name,
                                                  DTypeName(t->dtype), DTypeName(dtype)));
  }
  int64_t n = 1;
  for (int64_t d : t->shape) n *= d;
  if (static_cast<int64_t>(t->data.size()) != n * static_cast<int64_t>(DTypeSize(dtype))) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} bytes do not match shape {}", name, t->data.size(), Shape(t->shape)));
  }
  return t;
}

// Most elements a parsed 4-bit weight may have: 2^62 leaves room for (n + blocksize - 1).
constexpr int64_t kMaxElements = int64_t{1} << 62;

template <typename T>
std::vector<T> Values(const NamedTensor& t) {
  std::vector<T> out(t.data.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), t.data.data(), out.size() * sizeof(T));
  return out;
}

}  // namespace

std::string PythonFloatRepr(double value) {
  if (value != value) return "NaN";
  if (value == std::numeric_limits<double>::infinity()) return "Infinity";
  if (value == -std::numeric_limits<double>::infinity()) return "-Infinity";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-1.2345e-05"
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci = sci.substr(1);
  }
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exp10 = std::stoi(sci.substr(e + 1));
  const int decpt = exp10 + 1;  // value = 0.digits * 10^decpt
  std::string out;
  if (-4 < decpt && decpt <= 16) {
    if (decpt <= 0) {
      out = "0." + std::string(-decpt, '0') + digits;
    } else if (decpt >= static_cast<int>(digits.size())) {
      out = digits + std::string(decpt - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
  }
  return sign + out;
}

std::string QuantStateJson(const Quantized4bit& q) {
  std::string j = fmt::format(
      "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": {}",
      QuantTypeName(q.spec.type), q.spec.blocksize, TorchDTypeName(q.dtype), Shape(q.shape));
  if (q.spec.double_quant) {
    j += fmt::format(
        ", \"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
        kNestedBlocksize, PythonFloatRepr(static_cast<double>(q.nested.offset)));
  }
  return j + "}";
}

std::vector<NamedTensor> Serialize4bit(std::string_view weight_name, const Quantized4bit& q) {
  const std::string w(weight_name);
  std::vector<NamedTensor> out;
  out.push_back(MakeTensor(w, DType::kU8, {static_cast<int64_t>(q.packed.size()), 1},
                           q.packed.data(), q.packed.size()));
  if (q.spec.double_quant) {
    out.push_back(MakeTensor(w + ".absmax", DType::kU8,
                             {static_cast<int64_t>(q.nested.codes.size())},
                             q.nested.codes.data(), q.nested.codes.size()));
  } else {
    out.push_back(MakeTensor(w + ".absmax", DType::kF32, {static_cast<int64_t>(q.absmax.size())},
                             q.absmax.data(), q.absmax.size()));
  }
  const std::vector<float> map = QuantMap(q.spec.type);
  out.push_back(MakeTensor(w + ".quant_map", DType::kF32, {kFp4CodeCount}, map.data(), map.size()));
  if (q.spec.double_quant) {
    out.push_back(MakeTensor(w + ".nested_absmax", DType::kF32,
                             {static_cast<int64_t>(q.nested.nested_absmax.size())},
                             q.nested.nested_absmax.data(), q.nested.nested_absmax.size()));
    out.push_back(MakeTensor(w + ".nested_quant_map", DType::kF32, {kDynamicMapSize},
                             kDynamicMapSigned, kDynamicMapSize));
  }
  const std::string json = QuantStateJson(q);
  out.push_back(MakeTensor(w + "." + StateKey(q.spec.type), DType::kU8,
                           {static_cast<int64_t>(json.size())}, json.data(), json.size()));
  return out;
}

std::vector<NamedTensor> SerializeInt8(std::string_view weight_name, const QuantizedInt8& q) {
  const std::string w(weight_name);
  std::string module = w;
  if (module.size() > 7 && module.substr(module.size() - 7) == ".weight") {
    module = module.substr(0, module.size() - 7);
  }
  std::vector<NamedTensor> out;
  out.push_back(MakeTensor(w, DType::kI8, q.shape, q.weight.data(), q.weight.size()));
  out.push_back(MakeTensor(module + ".SCB", DType::kF32, {static_cast<int64_t>(q.scb.size())},
                           q.scb.data(), q.scb.size()));
  const uint8_t row_format = 0;
  out.push_back(MakeTensor(w + "_format", DType::kU8, {}, &row_format, 1));
  return out;
}

absl::StatusOr<Quantized4bit> Parse4bit(std::string_view weight_name,
                                        const TensorLookup& lookup) {
  const std::string w(weight_name);
  // Which quant_state key is present decides the type.
  const NamedTensor* state = nullptr;
  QuantType type = QuantType::kNf4;
  for (QuantType t : {QuantType::kNf4, QuantType::kFp4}) {
    if (const NamedTensor* s = lookup(w + "." + StateKey(t))) {
      state = s;
      type = t;
    }
  }
  if (state == nullptr) {
    return absl::NotFoundError(fmt::format("missing tensor {}.quant_state.bitsandbytes__nf4 (or __fp4)", w));
  }
  const std::string text(state->data.begin(), state->data.end());
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(fmt::format("{}.{}: {}", w, StateKey(type), why));
  };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("quant_type") || j["quant_type"] != QuantTypeName(type)) {
    return bad("quant_type does not match the key");
  }
  if (!j.contains("blocksize") || !j["blocksize"].is_number_integer()) return bad("no blocksize");
  if (!j.contains("dtype") || !j["dtype"].is_string()) return bad("no dtype");
  if (!j.contains("shape") || !j["shape"].is_array()) return bad("no shape");
  // get<int>() of 4294967360 would silently read 64: range-check the 64-bit value first.
  const int64_t blocksize = j["blocksize"].get<int64_t>();
  if (j["blocksize"].is_number_unsigned() && j["blocksize"].get<uint64_t>() > INT64_MAX) {
    return bad("blocksize out of range");
  }
  if (blocksize < std::numeric_limits<int>::min() || blocksize > std::numeric_limits<int>::max()) {
    return bad(fmt::format("blocksize {} out of range", blocksize));
  }
  Quantized4bit q;
  q.spec.type = type;
  q.spec.blocksize = static_cast<int>(blocksize);
  if (absl::Status s = CheckBlocksize(q.spec.blocksize, w + ".quant_state.blocksize"); !s.ok()) {
    return s;
  }
  const std::optional<DType> dtype = ParseTorchDType(j["dtype"].get<std::string>());
  if (!dtype) return bad("unknown dtype " + j["dtype"].dump());
  q.dtype = *dtype;
  // The element count must fit int64 with room for rounding up to whole blocks; an
  // overflowing product was undefined behaviour (found by quant_state_fuzzer).
  int64_t elements = 1;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0 ||
        (d.is_number_unsigned() && d.get<uint64_t>() > INT64_MAX)) {
      return bad("bad shape");
    }
    if (__builtin_mul_overflow(elements, d.get<int64_t>(), &elements) ||
        elements > kMaxElements) {
      return bad(fmt::format("shape {} has too many elements", j["shape"].dump()));
    }
    q.shape.push_back(d.get<int64_t>());
  }
  q.spec.double_quant = j.contains("nested_offset");
  const int64_t n = q.num_elements();
  const int64_t blocks = q.num_blocks();

  auto packed = Require(lookup, w, DType::kU8);
  if (!packed.ok()) return packed.status();
  if (static_cast<int64_t>((*packed)->data.size()) != (n + 1) / 2) {
    return absl::InvalidArgumentError(fmt::format("{}: {} bytes, expected {} for shape {}", w,
                                                  (*packed)->data.size(), (n + 1) / 2,
                                                  Shape(q.shape)));
  }
  q.packed = (*packed)->data;
  auto absmax = Require(lookup, w + ".absmax", q.spec.double_quant ? DType::kU8 : DType::kF32);
  if (!absmax.ok()) return absmax.status();
  const int64_t absmax_count =
      static_cast<int64_t>((*absmax)->data.size() / (q.spec.double_quant ? 1 : 4));
  if (absmax_count != blocks) {
    return absl::InvalidArgumentError(
        fmt::format("{}.absmax: {} entries, expected {}", w, absmax_count, blocks));
  }
  if (auto map = Require(lookup, w + ".quant_map", DType::kF32); !map.ok()) {
    return map.status();
  } else if (Values<float>(**map) != QuantMap(type)) {
    return absl::InvalidArgumentError(fmt::format("{}.quant_map is not bitsandbytes' {} map", w,
                                                  QuantTypeName(type)));
  }
  if (q.spec.double_quant) {
    // Not j.value(): it throws when the key holds a non-number (found by the fuzzer).
    if (!j.contains("nested_blocksize") || !j["nested_blocksize"].is_number_integer() ||
        j["nested_blocksize"].get<int64_t>() != kNestedBlocksize) {
      return bad("nested_blocksize must be 256");
    }
    if (!j["nested_offset"].is_number()) return bad("nested_offset is not a number");
    q.nested.offset = static_cast<float>(j["nested_offset"].get<double>());
    q.nested.codes = (*absmax)->data;
    auto nested = Require(lookup, w + ".nested_absmax", DType::kF32);
    if (!nested.ok()) return nested.status();
    q.nested.nested_absmax = Values<float>(**nested);
    if (static_cast<int64_t>(q.nested.nested_absmax.size()) !=
        (blocks + kNestedBlocksize - 1) / kNestedBlocksize) {
      return absl::InvalidArgumentError(fmt::format("{}.nested_absmax: wrong length", w));
    }
    auto nmap = Require(lookup, w + ".nested_quant_map", DType::kF32);
    if (!nmap.ok()) return nmap.status();
    if (Values<float>(**nmap) !=
        std::vector<float>(kDynamicMapSigned, kDynamicMapSigned + kDynamicMapSize)) {
      return absl::InvalidArgumentError(
          fmt::format("{}.nested_quant_map is not the signed dynamic map", w));
    }
  } else {
    q.absmax = Values<float>(**absmax);
  }
  return q;
}

absl::StatusOr<QuantizedInt8> ParseInt8(std::string_view weight_name,
                                        const TensorLookup& lookup) {
  const std::string w(weight_name);
  std::string module = w;
  if (module.size() > 7 && module.substr(module.size() - 7) == ".weight") {
    module = module.substr(0, module.size() - 7);
  }
  auto weight = Require(lookup, w, DType::kI8);
  if (!weight.ok()) return weight.status();
  if ((*weight)->shape.size() != 2) {
    return absl::InvalidArgumentError(fmt::format("{}: int8 weight must be 2-D", w));
  }
  auto scb = Require(lookup, module + ".SCB", DType::kF32);
  if (!scb.ok()) return scb.status();
  if (static_cast<int64_t>((*scb)->data.size() / 4) != (*weight)->shape[0]) {
    return absl::InvalidArgumentError(fmt::format("{}.SCB: one value per row expected", module));
  }
  if (const NamedTensor* fmt_t = lookup(w + "_format")) {
    if (fmt_t->data.size() != 1 || fmt_t->data[0] != 0) {
      return absl::InvalidArgumentError(fmt::format("{}_format: only row format (0) is supported", w));
    }
  }
  QuantizedInt8 q;
  q.shape = (*weight)->shape;
  q.dtype = DType::kF16;
  q.weight = Values<int8_t>(**weight);
  q.scb = Values<float>(**scb);
  return q;
}

bool IsQuantStateTensorName(std::string_view name) {
  for (std::string_view suffix :
       {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax",
        ".weight.nested_quant_map", ".weight.quant_state.bitsandbytes__nf4",
        ".weight.quant_state.bitsandbytes__fp4", ".SCB", ".weight_format"}) {
    if (name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
      return true;
    }
  }
  return false;
}

}  // namespace quant
}  // namespace loadstar
