#include "store/prequant_info.h"

#include <cstdint>

#include <fmt/format.h>

#include "base/status_macros.h"
#include "store/json_util.h"
#include "store/store.h"

namespace loadstar::store {

int64_t PrequantTensor::rows() const {
  int64_t r = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) r *= shape[i];
  return r;
}

const PrequantTensor* PrequantInfo::Find(std::string_view name) const {
  auto it = tensors.find(std::string(name));
  return it == tensors.end() ? nullptr : &it->second;
}

const PrequantLinear* PrequantInfo::FindLinear(std::string_view tensor, std::string* module,
                                               std::string* part) const {
  size_t dot = tensor.rfind('.');
  if (dot == std::string_view::npos) return nullptr;
  std::string_view suffix = tensor.substr(dot + 1);
  if (suffix != "qweight" && suffix != "qzeros" && suffix != "scales" && suffix != "g_idx") {
    return nullptr;
  }
  auto it = linears.find(std::string(tensor.substr(0, dot)));
  if (it == linears.end()) return nullptr;
  if (module) *module = it->first;
  if (part) *part = std::string(suffix);
  return &it->second;
}

std::string SerializePrequantInfo(const PrequantInfo& info) {
  if (info.format == "bitsandbytes") {
    return nlohmann::json({{"format", info.format},
                           {"quantization", nlohmann::json::parse(info.quantization_json)}})
        .dump(1);
  }
  if (info.format != "gguf") {
    nlohmann::json linears = nlohmann::json::object();
    for (const auto& [name, l] : info.linears) {
      linears[name] = {{"bits", l.bits}, {"in", l.in}, {"out", l.out},
                       {"group_size", l.group_size}, {"g_idx", l.g_idx}, {"v2", l.v2}};
    }
    return nlohmann::json({{"format", info.format}, {"linears", linears}}).dump(1);
  }
  nlohmann::json tensors = nlohmann::json::object();
  for (const auto& [name, t] : info.tensors) {
    tensors[name] = {{"ggml_type", std::string(quant::GgmlInfo(t.ggml_type).name)},
                     {"shape", t.shape},
                     {"source_name", t.source_name},
                     {"permute_heads", t.permute_heads}};
  }
  return nlohmann::json({{"format", info.format}, {"tensors", tensors}}).dump(1);
}

namespace {
constexpr int64_t kMaxLinearDim = int64_t{1} << 32;
}  // namespace

absl::StatusOr<PrequantInfo> ParsePrequantInfo(std::string_view text, std::string_view source) {
  ASSIGN_OR_RETURN(nlohmann::json root, ParseJsonStrict(text, source));
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", source, what));
  };
  if (!root.is_object() || !root.contains("format") || !root["format"].is_string()) {
    return invalid("expected {\"format\": string, ...}");
  }
  PrequantInfo info;
  info.format = root["format"].get<std::string>();
  if (info.format == "bitsandbytes") {
    if (!root.contains("quantization") || !root["quantization"].is_object()) {
      return invalid("expected \"quantization\": object");
    }
    info.quantization_json = root["quantization"].dump();
    return info;
  }
  if (info.format == "gptq" || info.format == "awq") {
    if (!root.contains("linears") || !root["linears"].is_object()) {
      return invalid("expected \"linears\": object");
    }
    for (const auto& item : root["linears"].items()) {
      // (no structured binding: clang < 16 cannot capture one in the lambda below)
      const std::string name = item.key();
      const nlohmann::json& e = item.value();
      auto bad = [&](const std::string& what) {
        return invalid(fmt::format("linear \"{}\": {}", name, what));
      };
      // Bounded before narrowing or multiplying: bits 2^32+4 read as int was 4, and
      // in * bits overflowed (found by prequant_info_fuzzer). No layer is 2^32 wide.
      for (const char* key : {"bits", "in", "out", "group_size"}) {
        if (!e.is_object() || !e.contains(key) || !e[key].is_number_integer() ||
            e[key].get<int64_t>() <= 0 ||
            (e[key].is_number_unsigned() && e[key].get<uint64_t>() > kMaxLinearDim) ||
            e[key].get<int64_t>() > kMaxLinearDim) {
          return bad(fmt::format("\"{}\" must be an integer in 1..2^32", key));
        }
      }
      // Not e.value(): it throws when the key holds a non-boolean.
      for (const char* key : {"g_idx", "v2"}) {
        if (e.contains(key) && !e[key].is_boolean()) {
          return bad(fmt::format("\"{}\" must be true or false", key));
        }
      }
      PrequantLinear l;
      l.bits = static_cast<int>(e["bits"].get<int64_t>());
      l.in = e["in"].get<int64_t>();
      l.out = e["out"].get<int64_t>();
      l.group_size = e["group_size"].get<int64_t>();
      l.g_idx = e.contains("g_idx") && e["g_idx"].get<bool>();
      l.v2 = e.contains("v2") && e["v2"].get<bool>();
      if (l.bits != 2 && l.bits != 3 && l.bits != 4 && l.bits != 8) return bad("bits");
      if ((l.in * l.bits) % 32 != 0 || (l.out * l.bits) % 32 != 0) {
        return bad("in/out do not fill whole 32-bit words");
      }
      info.linears.emplace(name, l);
    }
    return info;
  }
  if (!root.contains("tensors") || !root["tensors"].is_object()) {
    return invalid("expected \"tensors\": object");
  }
  if (info.format != "gguf") return invalid(fmt::format("unknown format \"{}\"", info.format));
  for (const auto& item : root["tensors"].items()) {
    const std::string name = item.key();
    const nlohmann::json& entry = item.value();
    auto bad = [&](const std::string& what) {
      return invalid(fmt::format("tensor \"{}\": {}", name, what));
    };
    if (!entry.is_object() || !entry.contains("ggml_type") || !entry["ggml_type"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() ||
        !entry.contains("source_name") || !entry["source_name"].is_string() ||
        !entry.contains("permute_heads") || !entry["permute_heads"].is_number_integer()) {
      return bad("expected ggml_type, shape, source_name and permute_heads");
    }
    PrequantTensor t;
    std::optional<quant::GgmlType> type =
        quant::ParseGgmlTypeName(entry["ggml_type"].get<std::string>());
    if (!type) return bad(fmt::format("unknown ggml_type {}", JsonSnippet(entry["ggml_type"])));
    t.ggml_type = *type;
    // The element count must fit int64 (rows() and sizes multiply the dims).
    int64_t elements = 1;
    for (const nlohmann::json& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() <= 0 ||
          (d.is_number_unsigned() && d.get<uint64_t>() > INT64_MAX)) {
        return bad("shape must be positive");
      }
      if (__builtin_mul_overflow(elements, d.get<int64_t>(), &elements) ||
          elements > (int64_t{1} << 62)) {
        return bad("shape has too many elements");
      }
      t.shape.push_back(d.get<int64_t>());
    }
    if (t.shape.empty() || t.shape.size() > 4) return bad("shape must have 1..4 dims");
    if (t.row_elems() % quant::GgmlInfo(t.ggml_type).block_elems != 0) {
      return bad("row length is not a whole number of blocks");
    }
    t.source_name = entry["source_name"].get<std::string>();
    t.permute_heads = entry["permute_heads"].get<int64_t>();
    // 2 * permute_heads <= rows first: 2 * a huge count overflowed.
    if (t.permute_heads < 0 || t.permute_heads > t.shape[0] / 2 ||
        (t.permute_heads > 0 && (t.shape.size() > 2 || t.shape[0] % (2 * t.permute_heads) != 0))) {
      return bad(fmt::format("permute_heads {} does not divide the rows in pairs per head",
                             t.permute_heads));
    }
    info.tensors.emplace(name, std::move(t));
  }
  return info;
}

absl::StatusOr<std::optional<PrequantInfo>> ReadPrequantInfo(const Store& store,
                                                             const std::string& name) {
  ASSIGN_OR_RETURN(std::string dir, store.ModelDir(name));
  std::string path = JoinPath(dir, kPrequantInfoFileName);
  if (!store.env()->FileExists(path)) return std::optional<PrequantInfo>();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(store.env(), path, 256ull << 20));
  ASSIGN_OR_RETURN(PrequantInfo info, ParsePrequantInfo(text, path));
  return std::optional<PrequantInfo>(std::move(info));
}

}  // namespace loadstar::store
